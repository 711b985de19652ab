"""reshape: flat (H, W, C)-ordered features to the shape given (NHWC for images)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where
from aebench.spec.schema import rule, shown


def positive_sizes(sizes: tuple[int, ...]) -> Optional[str]:
    """A check for a reshape's target: a non-empty list of sizes in 1..MAX_SIZE."""
    if sizes and min(sizes) >= 1 and max(sizes) <= MAX_SIZE:
        return None
    return f"must be a non-empty list of sizes >= 1 and at most {MAX_SIZE}, got {shown(list(sizes))}"


@dataclass(frozen=True)
class Reshape:
    """Reshapes flat features to (H, W, C)."""

    type: Literal["reshape"]
    shape: tuple[int, ...] = field(metadata=rule(positive_sizes))


def plan(layer: Reshape, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    if math.prod(layer.shape) != math.prod(shape):
        raise where.error(
            "shape",
            f"{shown(list(layer.shape))} holds {shown(math.prod(layer.shape))} values but its input "
            f"{shown(shape)} holds {shown(math.prod(shape))}",
        )
    return tuple(layer.shape), ()


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], *plan.layer.shape)


KIND = LayerKind("reshape", Reshape, plan, oracle)
