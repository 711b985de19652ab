"""Injected noise, drawn in NumPy from named streams of one seed, and the corruption it makes.

A stream is ``np.random.default_rng([seed, STREAM, *more])``: the training batches of epoch
e, the test evaluation and the prior samples each have their own, so changing the number
of epochs does not change what the test split sees.

A batch's noise is drawn in a fixed order from its stream: the reparameterisation noise
(standard normal for family vae: (B, latent), or (B, k, latent) for k = model.latent.samples >
1; Gumbel(0, 1) for family categorical), the corruption noise, then (training only) the draw of
each layer whose kind takes one, in the plan's order, then (every batch) the draws of the loss
terms that take them (LossTerm.draws), in rank order. A spec without such layers or terms draws
exactly what it drew before they existed, and one with k = 1 what it drew before k existed.
With k > 1 the decoder runs on B k rows (one per sample of z), so its layers' draws have B k
rows, example-major as z. Family categorical also gets the batch's Gumbel-softmax temperature
(batch_draws), computed, not drawn, from the training step's index (evaluation: the schedule's
floor).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from aebench.categorical import TEMPERATURE_KEY, gumbel_noise
from aebench.layers import kind_of, walk
from aebench.layers.base import Shape
from aebench.losses import term_draws
from aebench.plugins.backend_api import Noise
from aebench.spec.shapes import ModelPlan, data_shape
from aebench.spec.types import Corruption, Gaussian, Masking, Spec

TRAIN_STREAM, TEST_STREAM, PRIOR_STREAM, CHECK_STREAM = 1, 2, 3, 4


def stream(seed: int, *keys: int) -> np.random.Generator:
    """An independent generator for (seed, *keys)."""
    return np.random.default_rng([seed, *keys])


def layer_draws(plan: ModelPlan, samples: int = 1) -> dict[str, tuple[int, Shape]]:
    """The layers that take an injected draw in training (aebench.layers.base.LayerKind.draws),
    by canonical name, with the rows of one example's draw (1 in the encoder; ``samples``, the
    spec's model.latent.samples, in the decoder, which runs on every sample of z) and the shape
    of one row's draw (the layer's input shape)."""
    decoder = {p.name for p in walk(plan.decoder)}
    return {
        p.name: (samples if p.name in decoder else 1, p.in_shape) for p in walk(plan.layers) if kind_of(p.layer).draws
    }


def draw_noise(
    spec: Spec,
    plan: ModelPlan,
    batch_size: int,
    rng: np.random.Generator,
    training: bool = True,
    terms: bool = True,
    step: int = 0,
) -> Noise:
    """The noise one batch of ``batch_size`` needs under ``spec`` (float64); the layers' draws
    only for a ``training`` batch (evaluation runs without them); the per-batch draws
    (batch_draws: the temperature of training step ``step`` or of evaluation, the loss terms'
    draws) unless ``terms`` is False (a bench pool makes them batch by batch: aebench.bench.data)."""
    samples = spec.model.latent.samples
    eps = reparameterisation_noise(spec, plan, batch_size, rng)
    corruption = None
    if spec.corruption is not None:
        shape = (batch_size, *data_shape(spec))
        corruption = rng.standard_normal(shape) if isinstance(spec.corruption, Gaussian) else rng.random(shape)
    draws = {}
    if training:
        draws = {
            name: rng.random((batch_size * rows, *shape)) for name, (rows, shape) in layer_draws(plan, samples).items()
        }
    if terms:
        draws.update(batch_draws(spec, plan, batch_size, rng, step if training else None))
    return Noise(eps=eps, corruption=corruption, draws=draws)


def reparameterisation_noise(
    spec: Spec, plan: ModelPlan, batch_size: int, rng: np.random.Generator
) -> Optional[np.ndarray]:
    """Noise.eps: standard normal (family vae: (B, latent), or (B, k, latent) for k =
    model.latent.samples > 1), Gumbel(0, 1) (family categorical, (B, latent):
    aebench.categorical.gumbel_noise), None (family ae)."""
    if spec.model.family == "vae":
        samples = spec.model.latent.samples
        return rng.standard_normal(
            (batch_size, plan.latent_size) if samples == 1 else (batch_size, samples, plan.latent_size)
        )
    if spec.model.family == "categorical":
        return gumbel_noise(rng, (batch_size, plan.latent_size))
    return None


def batch_draws(
    spec: Spec, plan: ModelPlan, batch_size: int, rng: np.random.Generator, step: Optional[int]
) -> dict[str, np.ndarray]:
    """One batch's draws that are one per batch, not per example: family categorical's
    temperature (0-d, under TEMPERATURE_KEY: the schedule's at training step ``step``, or its
    evaluation value where ``step`` is None), then the loss terms' draws (term_draws)."""
    draws = {}
    if spec.model.family == "categorical":
        draws[TEMPERATURE_KEY] = np.asarray(temperature(spec, step), np.float64)
    draws.update(term_draws(spec.loss, plan, batch_size, rng))
    return draws


def temperature(spec: Spec, step: Optional[int]) -> float:
    """Family categorical's Gumbel-softmax temperature at training step ``step`` (0-based), or
    of evaluation (None): aebench.spec.types.Temperature."""
    schedule = spec.model.latent.temperature
    assert schedule is not None, "family categorical has a temperature (spec.load checks it)"
    return schedule.evaluation if step is None else schedule.at(step)


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
