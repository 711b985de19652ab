"""conv_transpose: 2-D transposed convolution, kernel (kh, kw, out, in) as in Keras.

Each input pixel scatters through the kernel without a flip; the full output of length
(n - 1) * stride + k is cropped to Keras' length (n * stride for 'same', starting at
(k - stride) // 2; n * stride + max(k - stride, 0) for 'valid') and zero-extended when
k < stride. An integer ``padding: p`` with ``output_padding: q`` is torch's: the full output
loses p values at the start and p - q at the end ((n - 1) * stride + k - 2p + q values; PyTorch
decoders write padding=1, output_padding=1 to double a size with k3 s2).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where, kernel_bias, needs_image
from aebench.layers.conv import Convolution, parsed_padding
from aebench.spec.schema import Parser, in_range, rule


@dataclass(frozen=True)
class ConvTranspose(Convolution):
    """2-D transposed convolution; kernel layout (kh, kw, out, in) as in Keras."""

    type: Literal["conv_transpose"]
    output_padding: int = field(default=0, metadata=rule(in_range(0, MAX_SIZE)))

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> ConvTranspose:
        layer = parser.parse_dataclass(cls, value, path)
        padding = parsed_padding(parser, layer.padding, f"{path}.padding", sides=False)
        if layer.output_padding and isinstance(padding, str):
            parser.fail(f"{path}.output_padding", "only allowed with a whole-number padding (torch's padding=p)")
        if layer.output_padding >= layer.stride:
            parser.fail(
                f"{path}.output_padding",
                f"must be smaller than the stride ({layer.stride}), as torch and Keras require; "
                f"got {layer.output_padding}",
            )
        return dataclasses.replace(layer, padding=padding)


def deconv_crop(n: int, layer: ConvTranspose) -> tuple[int, int]:
    """(start, length) to take from the full transposed convolution of length (n-1)*s + k.

    The full output may be shorter than start + length: the rest is zeros.
    """
    k, s, padding = layer.kernel, layer.stride, layer.padding
    if padding == "same":
        return max(k - s, 0) // 2, n * s
    if padding == "valid":
        return 0, n * s + max(k - s, 0)
    return padding, (n - 1) * s + k - 2 * padding + layer.output_padding


def plan(layer: ConvTranspose, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    needs_image("conv_transpose", shape, where)
    h, w, c = shape
    k, f = layer.kernel, layer.filters
    (_, out_h), (_, out_w) = deconv_crop(h, layer), deconv_crop(w, layer)
    if min(out_h, out_w) < 1:
        most = ((min(h, w) - 1) * layer.stride + k - 1 + layer.output_padding) // 2
        raise where.error("padding", f"{layer.padding} crops away the whole output of {h}x{w}; allowed: 0..{most}")
    return (out_h, out_w, f), kernel_bias(where.name, (k, k, f, c), f, k * k * f, k * k * c)


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    layer, kernel = plan.layer, plan.weight(weights, "kernel")
    batch, h, w, _ = x.shape
    k, s = layer.kernel, layer.stride
    full = np.zeros((batch, (h - 1) * s + k, (w - 1) * s + k, layer.filters))
    for a in range(k):
        for b in range(k):
            full[:, a : a + (h - 1) * s + 1 : s, b : b + (w - 1) * s + 1 : s] += x @ kernel[a, b].T
    (r0, nr), (c0, nc) = deconv_crop(h, layer), deconv_crop(w, layer)
    out = np.zeros((batch, nr, nc, layer.filters))
    part = full[:, r0 : r0 + nr, c0 : c0 + nc]
    out[:, : part.shape[1], : part.shape[2]] = part
    return out + plan.weight(weights, "bias")


def macs(plan: LayerPlan) -> int:
    return math.prod(plan.in_shape) * plan.layer.kernel**2 * plan.layer.filters


KIND = LayerKind("conv_transpose", ConvTranspose, plan, oracle, macs=macs, size_field="filters")
