"""Injected noise, drawn in NumPy from named streams of one seed, and the corruption it makes.

A stream is ``np.random.default_rng([seed, STREAM, *more])``: the training batches of epoch
e, the test evaluation and the prior samples each have their own, so changing the number
of epochs does not change what the test split sees.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from aebench.plugins.backend_api import Noise
from aebench.spec.shapes import ModelPlan, data_shape
from aebench.spec.types import Corruption, Gaussian, Masking, Spec

TRAIN_STREAM, TEST_STREAM, PRIOR_STREAM, CHECK_STREAM = 1, 2, 3, 4


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, *keys)."""
    return np.random.default_rng([seed, *keys])


def draw_noise(spec: Spec, plan: ModelPlan, batch_size: int, rng: np.random.Generator) -> Noise:
    """The noise one batch of ``batch_size`` needs under ``spec`` (float64)."""
    eps = rng.standard_normal((batch_size, plan.latent_size)) if spec.model.family == "vae" else None
    corruption = None
    if spec.corruption is not None:
        shape = (batch_size, *data_shape(spec))
        corruption = rng.standard_normal(shape) if isinstance(spec.corruption, Gaussian) else rng.random(shape)
    return Noise(eps=eps, corruption=corruption)


def corrupt(corruption: Optional[Corruption], x: np.ndarray, noise: Optional[np.ndarray]) -> np.ndarray:
    """The encoder's input: x corrupted by the injected noise (aebench.spec.types documents each kind)."""
    if corruption is None:
        return x
    if isinstance(corruption, Gaussian):
        out = x + corruption.std * noise
        return out if corruption.clip is None else np.clip(out, *corruption.clip)
    if isinstance(corruption, Masking):
        return np.where(noise < corruption.fraction, 0.0, x)
    half = corruption.fraction / 2
    return np.where(noise < half, 0.0, np.where(noise >= 1 - half, 1.0, x))


def epoch_order(n: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """A shuffled epoch as (steps, batch_size) indices; the last partial batch is dropped."""
    steps = n // batch_size
    return rng.permutation(n)[: steps * batch_size].reshape(steps, batch_size)
