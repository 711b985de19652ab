"""Canonical weights drawn in NumPy, so a training run starts from the same point in every
framework (their own initialisers differ: docs/EQUIVALENCE.md, 'Layouts and initialisers')."""

from __future__ import annotations

import numpy as np

from aebench.plugins.backend_api import Weights
from aebench.spec.shapes import ModelPlan, Param

# Keras' truncated normal (|x| < 2 sd) has a smaller spread than its sd; this restores it.
_TRUNCATED_NORMAL_SD = 0.87962566103423978


def init_weights(plan: ModelPlan, kernel_init: str, seed: int) -> Weights:
    """Weights drawn with the spec's initialiser (biases, offsets, running means, moving-average
    counts and sums zero; scales and running variances one; codebooks uniform in [-1/K, 1/K)),
    in float64, state included."""
    rng = np.random.default_rng(seed)
    return {p.name: _draw(rng, p, kernel_init) for p in plan.params}


def check_weights(plan: ModelPlan, weights: Weights) -> None:
    """Raise ValueError unless ``weights`` has exactly the plan's names and shapes."""
    expected = {p.name: p.shape for p in plan.params}
    if set(weights) != set(expected):
        missing, extra = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise ValueError(f"weights do not match the spec: missing {missing}, unexpected {extra}")
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ValueError(f"weight {name} has shape {tuple(weights[name].shape)}, expected {shape}")


def _draw(rng: np.random.Generator, p: Param, law: str) -> np.ndarray:
    if p.role in ("bias", "offset", "mean", "count", "sum"):
        return np.zeros(p.shape)
    if p.role == "embedding":  # PyTorch-VAE's VectorQuantizer: uniform(-1/K, 1/K) whatever the kernels' law
        return rng.uniform(-1.0 / p.shape[0], 1.0 / p.shape[0], p.shape)
    if p.role in ("scale", "variance"):
        return np.ones(p.shape)
    if law == "glorot_uniform":
        limit = np.sqrt(6.0 / (p.fan_in + p.fan_out))
        return rng.uniform(-limit, limit, p.shape)
    scale = {
        "glorot_normal": 2.0 / (p.fan_in + p.fan_out),
        "he_normal": 2.0 / p.fan_in,
        "lecun_normal": 1.0 / p.fan_in,
    }[law]
    return _truncated_normal(rng, np.sqrt(scale) / _TRUNCATED_NORMAL_SD, p.shape)


def _truncated_normal(rng: np.random.Generator, sd: float, shape: tuple[int, ...]) -> np.ndarray:
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2
    return out * sd
