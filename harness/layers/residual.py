"""residual: a list of layers whose output is added to the block's input, then the activation.

``{type: residual, layers: [...], projection: false, activation: linear}`` computes
activation(layers(x) + shortcut(x)): the layers run in order, each with its own activation, and
the activation of the block comes after the add. The shortcut is x itself, whose shape the
layers' output must then have; with ``projection: true`` it is a learned projection with a bias:
a 1x1 convolution ('valid', the smallest stride that gives the layers' height and width:
ceil(n / stride)) on images, a dense layer on flat features.

The layers may be of any kind, residual included. Their canonical names continue the block's:
``encoder.3.layers.0.kernel`` (spec field ``model.encoder[3].layers[0]``), and the projection's
``encoder.3.projection.kernel`` / ``.bias``, after the layers'.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import (
    LayerKind,
    LayerPlan,
    Param,
    Shape,
    Tape,
    Weights,
    Where,
    apply_layer,
    evaluation_of,
    kind_of,
    layer_schemas,
    training_of,
)
from aebench.layers.conv import Conv
from aebench.layers.dense import Dense
from aebench.spec.schema import Parser, shown


@dataclass(frozen=True)
class Residual:
    """activation(layers(x) + x), or + projection(x) with ``projection``."""

    type: Literal["residual"]
    layers: tuple[Any, ...]
    """Layer entries of any registered kind, parsed by ``from_yaml``."""
    projection: bool = False
    activation: Activation = LINEAR

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> Residual:
        block = parser.parse_dataclass(cls, value, path)
        if not block.layers:
            parser.fail(f"{path}.layers", "must hold at least one layer")
        entry = layer_schemas()
        layers = tuple(parser.parse(entry, item, f"{path}.layers[{i}]") for i, item in enumerate(block.layers))
        return dataclasses.replace(block, layers=layers)


def plan(layer: Residual, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    out = shape
    for i, inner in enumerate(layer.layers):
        out = where.nested(inner, out, f"layers.{i}", f"layers[{i}]").out_shape
    if layer.projection:
        where.nested(_projection(shape, out, where), shape, "projection", "projection")
    elif out != shape:
        raise where.error(
            "layers",
            f"output shape {shown(out)} differs from the block's input shape {shown(shape)}, so the two "
            "cannot be added: make them equal or add projection: true",
        )
    return out, tuple(p for child in where.children for p in child.params)


def _projection(shape: Shape, out: Shape, where: Where) -> Any:
    """The layer taking the block's input ``shape`` to the layers' output ``out``: a 1x1 convolution
    on images, dense on flat features."""
    if len(shape) == len(out) == 1:
        return Dense("dense", out[0], LINEAR)
    if len(shape) != 3 or len(out) != 3:
        raise where.error(
            "projection",
            f"projects images to images or flat features to flat features; the block takes {shown(shape)} "
            f"to {shown(out)}",
        )
    stride = _stride(shape[:2], out[:2])
    if stride is None:
        raise where.error(
            "projection",
            f"no stride of a 1x1 convolution takes the block's input {shape[0]}x{shape[1]} to its layers' "
            f"output {out[0]}x{out[1]} (a stride s gives ceil(n / s))",
        )
    return Conv("conv", out[2], 1, stride, "valid", LINEAR)


def _stride(size: Shape, target: Shape) -> Optional[int]:
    """The smallest s with ceil(n / s) == target for each side n of ``size``, or None."""
    if min(target) < 1:
        return None
    stride = max(-(-n // t) for n, t in zip(size, target))
    return stride if all(-(-n // stride) == t for n, t in zip(size, target)) else None


def body(plan: LayerPlan) -> tuple[LayerPlan, ...]:
    """The planned layers of the block, in order."""
    return plan.children[: len(plan.layer.layers)]


def projection(plan: LayerPlan) -> Optional[LayerPlan]:
    """The planned projection, or None."""
    return plan.children[-1] if plan.layer.projection else None


def taped(
    plan: LayerPlan,
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights],
    draws: Mapping[str, np.ndarray],
    tape: Tape,
) -> np.ndarray:
    """The block in either mode: the layers inside get the mode, the draws and the tape."""
    h = x
    for child in body(plan):
        h = apply_layer(child, weights, h, updates, draws, tape)[1]
    shortcut = projection(plan)
    return h + (x if shortcut is None else apply_layer(shortcut, weights, x, updates, draws, tape)[1])


def macs(plan: LayerPlan) -> int:
    return sum(kind_of(child.layer).macs(child) for child in plan.children)


def activation_values(plan: LayerPlan) -> int:
    """The inner layers' values and the sum's."""
    return sum(kind_of(child.layer).activation_values(child) for child in plan.children) + math.prod(plan.out_shape)


KIND = LayerKind(
    "residual",
    Residual,
    plan,
    evaluation_of(taped),
    macs=macs,
    activation_values=activation_values,
    train_oracle=training_of(taped),
    taped=taped,
)
