"""conv: 2-D cross-correlation on NHWC images with an HWIO kernel (kh, kw, in, out).

``padding`` is 'same', 'valid', an integer (zeros on every side, torch's ``padding=1``) or
per side ``[[top, bottom], [left, right]]``. 'same' pads as TensorFlow does: ceil(n / stride)
outputs, the odd extra row and column at the bottom and right, so torch's symmetric
padding=1 differs from it whenever the total is odd.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where, kernel_bias, needs_image
from aebench.spec.schema import Parser, in_range, rule, shown

Padding = Literal["same", "valid"]
Pads = tuple[tuple[int, int], tuple[int, int]]
"""((top, bottom), (left, right))."""


@dataclass(frozen=True)
class Convolution:
    """The fields a convolution and a transposed convolution share (square kernel and stride).

    ``padding`` holds 'same', 'valid', an int or Pads once parsed (``from_yaml`` checks it).
    """

    type: str
    filters: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    kernel: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    stride: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    padding: Any
    activation: Activation = LINEAR


@dataclass(frozen=True)
class Conv(Convolution):
    """2-D convolution on NHWC images; 'same' pads as TensorFlow does (extra at bottom/right)."""

    type: Literal["conv"]

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> Conv:
        layer = parser.parse_dataclass(cls, value, path)
        return dataclasses.replace(layer, padding=parsed_padding(parser, layer.padding, f"{path}.padding", sides=True))


PADDING_FORMS = "'same', 'valid', a whole number of zeros on every side, or [[top, bottom], [left, right]]"


def parsed_padding(parser: Parser, value: Any, path: str, sides: bool) -> Any:
    """'same', 'valid', an int >= 0 or (with ``sides``) Pads; anything else fails at ``path``."""
    if value in ("same", "valid") or _whole(value):
        return value
    if sides and isinstance(value, list) and len(value) == 2:
        if all(isinstance(pair, list) and len(pair) == 2 and all(_whole(v) for v in pair) for pair in value):
            return (tuple(value[0]), tuple(value[1]))
    forms = PADDING_FORMS if sides else "'same', 'valid' or a whole number of zeros on every side"
    parser.fail(path, f"must be {forms}; got {shown(value)}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_SIZE


def explicit_pads(padding: Any) -> Pads:
    """The Pads of a padding that is not 'same': 'valid' none, an int on every side."""
    if padding == "valid":
        return ((0, 0), (0, 0))
    if isinstance(padding, int):
        return ((padding, padding), (padding, padding))
    return padding


def conv_pads(layer: Conv, h: int, w: int) -> Pads:
    """The Pads of a convolution on h x w input."""
    if layer.padding == "same":
        return same_pads(h, layer.kernel, layer.stride), same_pads(w, layer.kernel, layer.stride)
    return explicit_pads(layer.padding)


def window_length(n: int, k: int, s: int, pads: tuple[int, int]) -> int:
    """Outputs of a size-k window moved by s over n values padded by pads (0 if it does not fit)."""
    return max((n + sum(pads) - k) // s + 1, 0)


def conv_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a strided convolution ('same' as TensorFlow: ceil(n / s))."""
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for a convolution: the extra goes after."""
    total = max((conv_length(n, k, s, "same") - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def plan(layer: Conv, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    needs_image("conv", shape, where)
    h, w, c = shape
    k, s = layer.kernel, layer.stride
    rows, cols = conv_pads(layer, h, w)
    given_rows, given_cols = ((0, 0), (0, 0)) if layer.padding == "same" else (rows, cols)
    room_h, room_w = h + sum(given_rows), w + sum(given_cols)
    if k > room_h or k > room_w:
        padded_to = "" if (room_h, room_w) == (h, w) else f" padded to {room_h}x{room_w}"
        allowed = min(room_h, room_w)
        raise where.error("kernel", f"{k} is larger than its input {h}x{w}{padded_to}; allowed: 1..{allowed}")
    out = (window_length(h, k, s, rows), window_length(w, k, s, cols), layer.filters)
    return out, kernel_bias(where.name, (k, k, c, layer.filters), layer.filters, k * k * c, k * k * layer.filters)


def padded(x: np.ndarray, layer: Conv) -> np.ndarray:
    """x with the spec's padding applied (NHWC)."""
    rows, cols = conv_pads(layer, *x.shape[1:3])
    return np.pad(x, ((0, 0), rows, cols, (0, 0)))


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    layer, kernel = plan.layer, plan.weight(weights, "kernel")
    k, s = layer.kernel, layer.stride
    windows = np.lib.stride_tricks.sliding_window_view(padded(x, layer), (k, k), axis=(1, 2))[:, ::s, ::s]
    return np.einsum("bhwcij,ijco->bhwo", windows, kernel, optimize=True) + plan.weight(weights, "bias")


def macs(plan: LayerPlan) -> int:
    return math.prod(plan.out_shape) * plan.layer.kernel**2 * plan.in_shape[2]


KIND = LayerKind("conv", Conv, plan, oracle, macs=macs, size_field="filters")
