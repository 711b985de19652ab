"""aebench: compare deep-learning frameworks on autoencoders.

The framework-neutral core lives here (installed as the package ``aebench``): the spec
schema, data, the NumPy oracle, the backend registry, training and the CLI. Backends live
in ``aebench.backends.<framework>`` and register through the ``aebench.backends`` entry
point group.
"""

__version__ = "0.1.0"
