"""dense: x @ kernel + bias on flat features; kernel (in, out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from aebench.layers.activations import LINEAR, Activation
from aebench.layers.base import MAX_SIZE, LayerKind, LayerPlan, Param, Shape, Weights, Where, kernel_bias, needs_flat
from aebench.spec.schema import in_range, rule


@dataclass(frozen=True)
class Dense:
    type: Literal["dense"]
    units: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    activation: Activation = LINEAR


def plan(layer: Dense, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    needs_flat("dense", shape, where)
    return (layer.units,), kernel_bias(where.name, (shape[0], layer.units), layer.units, shape[0], layer.units)


def oracle(plan: LayerPlan, weights: Weights, x: np.ndarray) -> np.ndarray:
    return x @ plan.weight(weights, "kernel") + plan.weight(weights, "bias")


def macs(plan: LayerPlan) -> int:
    return plan.in_shape[0] * plan.layer.units


KIND = LayerKind("dense", Dense, plan, oracle, macs=macs, size_field="units", affine=True)
