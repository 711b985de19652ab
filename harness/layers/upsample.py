"""upsample: enlarge NHWC images by an integer factor, nearest or bilinear.

Bilinear uses half-pixel centres: output pixel i samples the input at (i + 0.5) / factor - 0.5,
clamped to the first and last pixel at the borders. That is torch's ``align_corners=False``
(its default for ``F.interpolate``), TensorFlow's ``half_pixel_centers=True`` (what Keras'
UpSampling2D asks for) and ``jax.image.resize``'s linear method; torch's ``align_corners=True``
maps the corners onto each other instead and differs everywhere but at the corners.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from aebench.layers.base import LayerKind, LayerPlan, Param, Shape, Weights, Where, needs_image
from aebench.spec.schema import in_range, rule

MAX_FACTOR = 64
"""The largest upsampling factor: beyond it an image only repeats its pixels."""


@dataclass(frozen=True)
class Upsample:
    """Upsampling by ``factor`` in height and width, ``nearest`` or ``bilinear`` (half-pixel centres)."""

    type: Literal["upsample"]
    factor: int = field(metadata=rule(in_range(1, MAX_FACTOR)))
    interpolation: Literal["nearest", "bilinear"]


def plan(layer: Upsample, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    needs_image("upsample", shape, where)
    h, w, c = shape
    return (h * layer.factor, w * layer.factor, c), ()


def source_positions(n: int, factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of the n * factor outputs: the lower input index, the upper one and the upper's weight."""
    src = np.maximum((np.arange(n * factor) + 0.5) / factor - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(int), n - 1)
    high = np.minimum(low + 1, n - 1)
    return low, high, src - low


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    layer = plan.layer
    if layer.interpolation == "nearest":
        return x.repeat(layer.factor, axis=1).repeat(layer.factor, axis=2)
    for axis in (1, 2):
        low, high, frac = source_positions(x.shape[axis], layer.factor)
        shape = [1, 1, 1, 1]
        shape[axis] = len(frac)
        frac = frac.reshape(shape)
        x = np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac
    return x


KIND = LayerKind("upsample", Upsample, plan, oracle)
