"""The NumPy float64 oracle: forward pass and every loss term of every spec (each term's
own oracle lives with it in aebench.losses).

Each layer is its kind's oracle (aebench.layers: Keras'/TensorFlow's semantics, written
out in each kind's module), then its activation (aebench.layers.activations). The decoder
returns logits; the output activation is applied for images and for MSE only, and BCE is
computed from the logits in its stable form.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from aebench.categorical import TEMPERATURE_KEY, relaxed_sample
from aebench.data.noise import corrupt
from aebench.layers import Tape, apply_layer, run_stack
from aebench.layers.activations import Activation, activate
from aebench.losses import LOSS_TERMS, present_terms
from aebench.losses.base import Forward, OracleInputs, repeat_rows
from aebench.plugins.backend_api import Batch, Noise, Weights, with_total
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import Spec

# ---------------------------------------------------------------- the whole model


def forward(
    spec: Spec,
    weights: Weights,
    batch: Batch,
    plan: Optional[ModelPlan] = None,
    updates: Optional[Weights] = None,
    tape: Optional[Tape] = None,
) -> Forward:
    """The float64 forward pass with the batch's injected noise: in evaluation mode (running
    statistics, no dropout), or in training mode (batch statistics, the batch's layer draws)
    when ``updates`` is a dict, which then receives the updated state (running statistics) by
    canonical name. The layers' taps and held values go on ``tape`` (a new one when None; a
    replaying tape holds them at its recorded values: aebench.layers.base.Tape)."""
    plan = plan or plan_model(spec)
    tape = Tape() if tape is None else tape
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    x = np.asarray(batch.x, dtype=np.float64)
    labels = None if batch.labels is None else np.asarray(batch.labels, dtype=np.float64)
    x_in = corrupt(spec.corruption, x, batch.noise.corruption)
    draws = batch.noise.draws
    h = run_stack(plan.encoder, weights, _join_labels(x_in, labels), updates, draws, tape)
    code = mean = log_var = category_logits = None
    samples = spec.model.latent.samples
    if spec.model.family == "vae":
        mean = apply_layer(plan.heads[0], weights, h, updates, draws, tape)[1]
        log_var = apply_layer(plan.heads[1], weights, h, updates, draws, tape)[1]
        z = sample_posterior(mean, log_var, np.asarray(batch.noise.eps, dtype=np.float64))
    elif spec.model.family == "categorical":
        category_logits = apply_layer(plan.heads[0], weights, h, updates, draws, tape)[1]
        z = categorical_sample(spec, category_logits, batch.noise, tape)
    else:
        code = z = apply_layer(plan.heads[0], weights, h, updates, draws, tape)[1]
    decoder_labels = None if labels is None else repeat_rows(labels, samples)
    logits = run_stack(plan.decoder, weights, _join_labels(z, decoder_labels), updates, draws, tape)
    return Forward(x_in, code, mean, log_var, z, logits, samples, tape, category_logits)


def sample_posterior(mean: np.ndarray, log_var: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """z = mean + exp(log_var / 2) * eps: eps (B, latent) gives (B, latent); eps (B, k, latent)
    gives each example's k samples flattened example-major to (B k, latent)."""
    if eps.ndim == 2:
        return mean + np.exp(0.5 * log_var) * eps
    z = mean[:, None, :] + np.exp(0.5 * log_var)[:, None, :] * eps
    return z.reshape(-1, mean.shape[1])


def categorical_sample(spec: Spec, category_logits: np.ndarray, noise: Noise, tape: Tape) -> np.ndarray:
    """Family categorical's z from the posterior's logits, the batch's Gumbel noise (eps) and
    temperature (aebench.categorical); a straight-through sample holds one_hot(y) - y on ``tape``."""
    latent = spec.model.latent
    assert latent.categories is not None and latent.hard is not None, "family categorical (spec.load checks it)"
    tau = float(noise.draws[TEMPERATURE_KEY])
    return relaxed_sample(category_logits, noise.eps, tau, latent.categories, latent.hard, tape)


def _join_labels(x: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
    return x if labels is None else np.concatenate([x, labels], axis=1)


def loss_terms(
    spec: Spec,
    weights: Weights,
    batch: Batch,
    plan: Optional[ModelPlan] = None,
    training: bool = True,
    tape: Optional[Tape] = None,
) -> dict[str, float]:
    """Every loss term of the spec (unweighted, each its term's oracle: aebench.losses) and
    their weighted total, in float64, in training mode (batch statistics, the batch's layer
    draws; the state is not updated: train_state gives the update) or in evaluation mode
    (running statistics, no dropout). The forward pass and the terms record on ``tape``
    (forward), or replay it (finite differences of the surrogate: aebench.check.equivalence)."""
    plan = plan or plan_model(spec)
    weights64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    fwd = forward(spec, weights64, batch, plan, {} if training else None, tape)
    inputs = OracleInputs(spec, plan, weights64, batch, fwd)
    terms = {name: LOSS_TERMS[name].oracle(getattr(spec.loss, name), inputs) for name in present_terms(spec.loss)}
    return with_total(spec, terms)


def train_state(spec: Spec, weights: Weights, batch: Batch, plan: Optional[ModelPlan] = None) -> Weights:
    """The weights after one training-mode forward pass on ``batch``: the same trainable
    weights, the state (running statistics) updated."""
    updates: Weights = {}
    forward(spec, weights, batch, plan, updates)
    return {**weights, **updates}


def output(spec: Spec, logits: np.ndarray) -> np.ndarray:
    """What a user sees: sigmoid(logits) for image specs, the linear output otherwise."""
    return activate(Activation(spec.model.output_activation), logits)
