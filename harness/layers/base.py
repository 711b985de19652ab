"""What every layer kind declares, and the planned layer the harness and the backends share.

A layer kind is one module of this package holding a ``KIND``: its spec schema (a frozen
dataclass whose first field is ``type: Literal[...]``), its shape rule, its multiply-adds,
its activation memory and its NumPy float64 oracle. Canonical parameters (``Param``) say
how they are drawn through their role; the backends map a kind's name to a builder.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from aebench.errors import SpecError
from aebench.spec.schema import shown

MAX_SIZE = 2**31 - 1
"""The largest layer size, kernel, stride or class count: what every framework indexes with 32 bits."""

Shape = tuple[int, ...]
Weights = dict[str, np.ndarray]
Role = Literal["kernel", "bias", "scale", "offset", "mean", "variance"]
"""How a parameter starts: 'kernel' draws from the spec's init law, 'bias', 'offset' and
'mean' are zeros, 'scale' and 'variance' are ones."""


@dataclass(frozen=True)
class Param:
    """One canonical parameter array. A non-trainable one (a running statistic) is state: it
    is set, read and compared like the others, but has no gradient and no optimizer slot."""

    name: str
    shape: Shape
    role: Role
    fan_in: int
    fan_out: int
    trainable: bool = True


@dataclass(frozen=True)
class LayerPlan:
    """A layer with its canonical name, shapes and parameters."""

    name: str
    layer: Any
    in_shape: Shape
    out_shape: Shape
    params: tuple[Param, ...]

    def weight(self, weights: Weights, role: str) -> np.ndarray:
        """This layer's parameter ``role`` ('kernel', 'bias') from canonical weights."""
        return weights[f"{self.name}.{role}"]


class Where:
    """Where a layer sits: its canonical name and spec path, and how to fail there."""

    def __init__(self, file: str, name: str, path: str):
        self.file, self.name, self.path = file, name, path

    def error(self, field: str, message: str) -> SpecError:
        """A SpecError naming ``path.field`` (the layer itself when ``field`` is "")."""
        return SpecError(self.file, f"{self.path}.{field}" if field else self.path, message)


Planner = Callable[[Any, Shape, Where], tuple[Shape, tuple[Param, ...]]]
"""(layer, input shape, where) -> (output shape, parameters); raises where.error(...)."""
Oracle = Callable[[LayerPlan, Weights, np.ndarray], np.ndarray]
"""(plan, float64 weights, float64 input batch) -> the layer's output before its activation."""
TrainOracle = Callable[[LayerPlan, Weights, np.ndarray, Optional[np.ndarray]], tuple[np.ndarray, Weights]]
"""(plan, weights, batch, the layer's injected draw: None unless its kind ``draws``) ->
(training-mode output before the activation, the layer's updated state by canonical name)."""


def no_macs(plan: LayerPlan) -> int:
    return 0


def output_values(plan: LayerPlan) -> int:
    return math.prod(plan.out_shape)


@dataclass(frozen=True)
class LayerKind:
    """Everything the harness knows about one layer kind.

    name: the spec's ``type``; schema: the dataclass a spec entry parses into; plan: the
    shape rule; oracle: the float64 forward pass (the activation, if the schema has one,
    is applied by the caller); macs: multiply-adds per example of the forward pass
    (aebench.bench.flops counts two FLOPs each); activation_values: values per example
    kept for the backward pass (aebench.spec.memory); size_field: the schema field that
    sets the output size, named when a spec does not fit in memory; affine: the layer is
    x @ kernel + bias on flat features, so a Jacobian through it is J @ kernel (the
    contractive term allows encoders of such layers only); train_oracle: the forward pass
    in training mode for a kind that behaves differently there (batch statistics, a dropout
    mask) and may update its state; None: the same as ``oracle``, no state; draws: the kind
    takes an injected uniform [0, 1) draw of its input's shape per example in training (a
    dropout mask: aebench.data.noise draws it in NumPy, so every backend gets the same), which
    its train_oracle receives.
    """

    name: str
    schema: type
    plan: Planner
    oracle: Oracle
    macs: Callable[[LayerPlan], int] = no_macs
    activation_values: Callable[[LayerPlan], int] = output_values
    size_field: Optional[str] = None
    affine: bool = False
    train_oracle: Optional[TrainOracle] = None
    draws: bool = False


def kernel_bias(name: str, kernel: Shape, units: int, fan_in: int, fan_out: int) -> tuple[Param, Param]:
    """A kernel and its bias. Fans follow Keras' compute_fans, so glorot and lecun draw from the same laws."""
    return (
        Param(f"{name}.kernel", kernel, "kernel", fan_in, fan_out),
        Param(f"{name}.bias", (units,), "bias", fan_in, fan_out),
    )


def needs_flat(kind: str, shape: Shape, where: Where) -> None:
    if len(shape) != 1:
        raise where.error("type", f"{kind} needs flat input, got shape {shown(shape)}: add {{type: flatten}} before it")


def needs_image(kind: str, shape: Shape, where: Where) -> None:
    if len(shape) != 3:
        raise where.error(
            "type",
            f"{kind} needs (height, width, channels) input, got shape {shown(shape)}: "
            "add {type: reshape, shape: [h, w, c]} before it",
        )
