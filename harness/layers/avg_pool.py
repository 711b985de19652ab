"""avg_pool: the mean of each size x size window, per channel, on NHWC images.

With 'same' padding (TensorFlow's: the odd extra row and column at the bottom and right) the
frameworks divide differently at the borders: Keras (TensorFlow) and torch's
``count_include_pad=False`` divide by the real cells of the window, Flax's default and torch's
default by the whole window (padded zeros included). A spec with 'same' states which.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where
from aebench.layers.conv import Padding
from aebench.layers.max_pool import plan_pool, windows
from aebench.spec.schema import Parser, in_range, rule


@dataclass(frozen=True)
class AvgPool:
    """Average pooling; ``stride`` defaults to ``size``; ``count_include_pad`` is required with 'same'."""

    type: Literal["avg_pool"]
    size: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    padding: Padding
    stride: Optional[int] = field(default=None, metadata=rule(in_range(1, MAX_SIZE)))
    count_include_pad: Optional[bool] = None

    @property
    def step(self) -> int:
        return self.size if self.stride is None else self.stride

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> AvgPool:
        layer = parser.parse_dataclass(cls, value, path)
        if layer.padding == "same" and layer.count_include_pad is None:
            parser.fail(
                path,
                "avg_pool with padding same must state count_include_pad: false divides by the real "
                "cells of each window (Keras, torch count_include_pad=False), true by the whole window "
                "(Flax's default, torch's default)",
            )
        if layer.padding == "valid" and layer.count_include_pad is not None:
            parser.fail(f"{path}.count_include_pad", "only allowed with padding same (valid windows have no padding)")
        return layer


def plan(layer: AvgPool, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    return plan_pool("avg_pool", layer, shape, where)


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    layer = plan.layer
    sums = windows(x, layer, 0.0).sum(axis=(4, 5))
    if layer.count_include_pad is not False:
        return sums / layer.size**2
    counts = windows(np.ones((1, *x.shape[1:3], 1)), layer, 0.0).sum(axis=(4, 5))
    return sums / counts


KIND = LayerKind("avg_pool", AvgPool, plan, oracle)
