"""dropout: in training, each value of the input is dropped with probability ``rate`` and the
kept ones are scaled by 1 / (1 - rate) (inverted dropout, as torch, Keras and Flax scale);
in evaluation the layer is the identity.

The frameworks draw their masks from their own generators, so no two agree on which units
drop. aebench injects the draw instead, as it does the corruption noise: a uniform [0, 1)
array of the layer's input shape per example (aebench.data.noise.draw_noise), and a value is
kept where its draw is >= rate. No parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from aebench.layers.base import LayerKind, LayerPlan, Param, Shape, Weights, Where
from aebench.spec.schema import in_interval, rule


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout with the injected draw: x * (u >= rate) / (1 - rate) in training."""

    type: Literal["dropout"]
    rate: float = field(metadata=rule(in_interval(0.0, 1.0, closed_low=True, closed_high=False)))


def plan(layer: Dropout, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    return shape, ()


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    """Evaluation mode: the identity."""
    return x


def keep(rate: float, draw: np.ndarray) -> np.ndarray:
    """Which values a draw keeps: those whose uniform draw is at least the rate."""
    return draw >= rate


def train_oracle(
    plan: LayerPlan, weights: Weights, x: np.ndarray, draws: Mapping[str, np.ndarray]
) -> tuple[np.ndarray, Weights]:
    """Training mode: the kept values scaled by 1 / (1 - rate), the dropped ones zero; no state."""
    draw = np.asarray(draws[plan.name], dtype=np.float64)
    rate = plan.layer.rate
    return np.where(keep(rate, draw), x / (1 - rate), 0.0), {}


def activation_values(plan: LayerPlan) -> int:
    """The output and the draw (the mask the backward pass reads)."""
    return 2 * int(np.prod(plan.out_shape))


KIND = LayerKind(
    "dropout", Dropout, plan, oracle, activation_values=activation_values, train_oracle=train_oracle, draws=True
)
