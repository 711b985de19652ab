"""reconstruction: how far the decoder's output is from the clean x.

mse compares x with the output activation of the logits (sigmoid, tanh or linear); bce uses the logits form
max(l, 0) - l x + log(1 + exp(-|l|)), never clipped probabilities (docs/EQUIVALENCE.md, 'Losses').
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


def reconstruction_loss(cfg: Reconstruction, output_activation: str, logits: np.ndarray, x: np.ndarray) -> float:
    if cfg.kind == "bce":
        return reduce(bce_with_logits(logits, x), cfg.features, cfg.batch)
    return reduce((activate(Activation(output_activation), logits) - x) ** 2, cfg.features, cfg.batch)


def oracle(cfg: Reconstruction, inputs: OracleInputs) -> float:
    return reconstruction_loss(cfg, inputs.spec.model.output_activation, inputs.forward.logits, inputs.x)


def log_likelihood(cfg: Reconstruction, x: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """log p(x|z) per row, in nats, float64: Bernoulli for bce (decoded probabilities clipped
    to [eps, 1 - eps] of their dtype), for mse the Gaussian of fixed variance whose negative
    log-density has this term as its quadratic part (sigma^2 = 1/2 for ``features: sum``, D/2
    for ``features: mean``), normalising constant included (aebench.train.quality)."""
    eps = np.finfo(np.asarray(decoded).dtype).eps if np.issubdtype(np.asarray(decoded).dtype, np.floating) else 0.0
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    out = np.asarray(decoded, np.float64).reshape(len(x), -1)
    if cfg.kind == "bce":
        p = np.clip(out, eps, 1.0 - eps)
        return (x * np.log(p) + (1.0 - x) * np.log1p(-p)).sum(axis=1)
    features = x.shape[1]
    variance = 0.5 if cfg.features == "sum" else 0.5 * features
    return -((x - out) ** 2).sum(axis=1) / (2.0 * variance) - 0.5 * features * np.log(2.0 * np.pi * variance)


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
