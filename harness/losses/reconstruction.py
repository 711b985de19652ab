"""reconstruction: how far the decoder's output is from the clean x.

mse compares x with the output activation of the logits (sigmoid, tanh or linear); bce uses the logits form
max(l, 0) - l x + log(1 + exp(-|l|)), never clipped probabilities (docs/EQUIVALENCE.md, 'Losses').
With k = model.latent.samples > 1 posterior samples per example, each example's value is the mean
over its k rows (the k-sample estimate of E_q[-log p(x|z)]) before the batch's reduction, so
``batch: sum`` stays a sum over examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.layers.activations import Activation, activate
from aebench.losses.base import Fail, LossTerm, OracleInputs, reduce
from aebench.spec.schema import at_least, rule


@dataclass(frozen=True)
class Reconstruction:
    """mse compares x with the output (the output activation of the logits); bce uses the logits form."""

    kind: Literal["mse", "bce"]
    weight: float = field(metadata=rule(at_least(0)))
    features: Literal["sum", "mean"]
    batch: Literal["mean", "sum"]


def bce_with_logits(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Elementwise binary cross-entropy from logits, the stable form."""
    return np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))


def reconstruction_loss(
    cfg: Reconstruction, output_activation: str, logits: np.ndarray, x: np.ndarray, samples: int = 1
) -> float:
    """The term from logits and target of the same rows (``samples`` rows per example)."""
    if cfg.kind == "bce":
        return reduce(bce_with_logits(logits, x), cfg.features, cfg.batch, samples)
    return reduce((activate(Activation(output_activation), logits) - x) ** 2, cfg.features, cfg.batch, samples)


def oracle(cfg: Reconstruction, inputs: OracleInputs) -> float:
    fwd = inputs.forward
    return reconstruction_loss(cfg, inputs.spec.model.output_activation, fwd.logits, inputs.target, fwd.samples)


def bernoulli_log_likelihood(x: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """log p(x|z) per row of decoded, in nats, float64, from decoded probabilities clipped to
    [eps, 1 - eps] of their dtype (a float32 sigmoid saturates to exactly 1 beyond logit
    16.6); x has as many rows, or one row for all of them."""
    eps = np.finfo(np.asarray(decoded).dtype).eps if np.issubdtype(np.asarray(decoded).dtype, np.floating) else 0.0
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    p = np.clip(np.asarray(decoded, np.float64).reshape(len(decoded), -1), eps, 1.0 - eps)
    return (x * np.log(p) + (1.0 - x) * np.log1p(-p)).sum(axis=1)


def gaussian_log_likelihood(x: np.ndarray, decoded: np.ndarray, variance: float) -> np.ndarray:
    """log N(x; decoded, variance I) per row of decoded, in nats, float64, normalising constant
    included; x has as many rows, or one row for all of them."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    out = np.asarray(decoded, np.float64).reshape(len(decoded), -1)
    features = x.shape[1]
    return -((x - out) ** 2).sum(axis=1) / (2.0 * variance) - 0.5 * features * np.log(2.0 * np.pi * variance)


def log_likelihood(cfg: Reconstruction, x: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """log p(x|z) per row, in nats, float64: Bernoulli for bce (bernoulli_log_likelihood), for
    mse the Gaussian of fixed variance whose negative log-density has this term as its quadratic
    part (sigma^2 = 1/2 for ``features: sum``, D/2 for ``features: mean``), normalising constant
    included (aebench.train.quality)."""
    if cfg.kind == "bce":
        return bernoulli_log_likelihood(x, decoded)
    features = int(np.prod(np.shape(x)[1:]))
    return gaussian_log_likelihood(x, decoded, 0.5 if cfg.features == "sum" else 0.5 * features)


def rules(cfg: Reconstruction, spec: Any, fail: Fail) -> None:
    if cfg.kind == "bce" and spec.model.output_activation != "sigmoid":
        fail("loss.reconstruction.kind", "bce needs output_activation sigmoid (it is computed from the logits)")


TERM = LossTerm(
    "reconstruction",
    Reconstruction,
    rank=0,
    weight=lambda cfg: cfg.weight,
    oracle=oracle,
    rules=rules,
    required=lambda spec: "every autoencoder reconstructs",
    log_likelihood=log_likelihood,
)
