"""batch_norm: per-channel (last axis) normalisation of flat (B, F) or image (B, H, W, C) features.

Conventions the frameworks do not share, each stated in the spec:

- ``momentum`` is the weight of the new batch in the running statistics (torch's 0.1; Keras
  and Flax write 0.99, the weight of the old): running = (1 - momentum) * running + momentum * batch.
- ``epsilon`` (torch and Flax default to 1e-5, Keras to 1e-3), added to the variance.
- ``variance_update``: the running variance takes the unbiased batch variance (torch) or the
  biased one (Keras, Flax). Normalisation in training mode always uses the biased one.

Training mode normalises with the batch statistics and updates the running ones; evaluation
mode normalises with the running statistics. An ``activation`` follows the normalisation (the
conv, batch_norm, activation block of torch code). Parameters: trainable ``gamma`` (ones) and
``beta`` (zeros); state ``running_mean`` (zeros) and ``running_var`` (ones).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import LayerKind, LayerPlan, Param, Shape, Weights, Where
from aebench.spec.schema import greater_than, in_interval, rule, shown


@dataclass(frozen=True)
class BatchNorm:
    """Batch normalisation; momentum is the new batch's weight (torch's convention)."""

    type: Literal["batch_norm"]
    momentum: float = field(metadata=rule(in_interval(0.0, 1.0, closed_low=False, closed_high=True)))
    epsilon: float = field(metadata=rule(greater_than(0.0)))
    variance_update: Literal["unbiased", "biased"]
    activation: Activation = LINEAR


def plan(layer: BatchNorm, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    if len(shape) not in (1, 3):
        raise where.error("type", f"batch_norm needs flat or (height, width, channels) input, got {shown(shape)}")
    c = shape[-1]
    params = (
        Param(f"{where.name}.gamma", (c,), "scale", c, c),
        Param(f"{where.name}.beta", (c,), "offset", c, c),
        Param(f"{where.name}.running_mean", (c,), "mean", c, c, trainable=False),
        Param(f"{where.name}.running_var", (c,), "variance", c, c, trainable=False),
    )
    return shape, params


def _normalise(plan: LayerPlan, weights: Weights, x: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    scale = plan.weight(weights, "gamma") / np.sqrt(var + plan.layer.epsilon)
    return (x - mean) * scale + plan.weight(weights, "beta")


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Evaluation mode: the running statistics."""
    return _normalise(plan, weights, x, plan.weight(weights, "running_mean"), plan.weight(weights, "running_var"))


def train_oracle(
    plan: LayerPlan, weights: Weights, x: np.ndarray, draws: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, Weights]:
    """Training mode: the batch statistics (biased variance), and the updated running ones (no draw)."""
    layer = plan.layer
    axes = tuple(range(x.ndim - 1))
    n = int(np.prod([x.shape[a] for a in axes]))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    update_var = var * n / (n - 1) if layer.variance_update == "unbiased" else var
    m = layer.momentum
    state = {
        f"{plan.name}.running_mean": (1 - m) * plan.weight(weights, "running_mean") + m * mean,
        f"{plan.name}.running_var": (1 - m) * plan.weight(weights, "running_var") + m * update_var,
    }
    return _normalise(plan, weights, x, mean, var), state


def macs(plan: LayerPlan) -> int:
    return 2 * int(np.prod(plan.in_shape))


KIND = LayerKind("batch_norm", BatchNorm, plan, oracle, macs=macs, train_oracle=train_oracle)
