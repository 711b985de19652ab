"""max_pool: the largest value of each size x size window, per channel, on NHWC images.

'same' pads as TensorFlow does (ceil(n / stride) outputs, the odd extra row and column at the
bottom and right) and the padded cells never win (they count as -inf), as in every framework.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import numpy as np

from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where, needs_image
from aebench.layers.conv import Padding, conv_length, same_pads
from aebench.spec.schema import in_range, rule


@dataclass(frozen=True)
class MaxPool:
    """Max pooling; ``stride`` defaults to ``size`` (as in Keras and torch)."""

    type: Literal["max_pool"]
    size: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    padding: Padding
    stride: Optional[int] = field(default=None, metadata=rule(in_range(1, MAX_SIZE)))

    @property
    def step(self) -> int:
        return self.size if self.stride is None else self.stride


def plan_pool(kind: str, layer, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    """The shape rule every pooling shares: a size x size window moved by the stride, per channel."""
    needs_image(kind, shape, where)
    h, w, c = shape
    if layer.padding == "valid" and (layer.size > h or layer.size > w):
        raise where.error("size", f"{layer.size} is larger than its input {h}x{w}; allowed: 1..{min(h, w)}")
    return (
        conv_length(h, layer.size, layer.step, layer.padding),
        conv_length(w, layer.size, layer.step, layer.padding),
        c,
    ), ()


def windows(x: np.ndarray, layer, fill: float) -> np.ndarray:
    """Every pooling window of x (B, H', W', C, size, size), padded with ``fill`` for 'same'."""
    if layer.padding == "same":
        (top, bottom), (left, right) = (same_pads(n, layer.size, layer.step) for n in x.shape[1:3])
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(x, (layer.size, layer.size), axis=(1, 2))
    return view[:, :: layer.step, :: layer.step]


def plan(layer: MaxPool, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    return plan_pool("max_pool", layer, shape, where)


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    return windows(x, plan.layer, -np.inf).max(axis=(4, 5))


KIND = LayerKind("max_pool", MaxPool, plan, oracle)
