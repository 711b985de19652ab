"""Data shipped with aebench: a real MNIST subset (see README.md beside it)."""
