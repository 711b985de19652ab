"""flatten: NHWC features to flat, walking (H, W, C) as Keras does."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from aebench.layers.base import LayerKind, LayerPlan, Param, Shape, Weights, Where


@dataclass(frozen=True)
class Flatten:
    """Flattens NHWC features in (H, W, C) order, as Keras does."""

    type: Literal["flatten"]


def plan(layer: Flatten, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    return (math.prod(shape),), ()


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


KIND = LayerKind("flatten", Flatten, plan, oracle)
