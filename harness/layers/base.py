"""What every layer kind declares, the planned layer the harness and the backends share, and
the registry every kind is reached through.

A layer kind is one module of this package holding a ``KIND``: its spec schema (a frozen
dataclass whose first field is ``type: Literal[...]``), its shape rule, its multiply-adds,
its activation memory and its NumPy float64 oracle. Canonical parameters (``Param``) say
how they are drawn through their role; the backends map a kind's name to a builder.

A kind whose layers hold layers (residual) plans, runs and counts them through ``KINDS``,
which aebench.layers fills when it finds the kinds: ``Where.nested`` plans a layer inside
another, ``apply_layer`` runs one.

A forward pass of the oracle may carry a ``Tape``: the kinds that expose intermediates to loss
terms (a vector quantizer's input and chosen codes) tap them there, and every value the
frameworks hold constant for differentiation (their stop_gradient, ``.detach()``) is recorded
there, so that finite differences can replay it (``Tape.replay``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

import numpy as np

from aebench.errors import SpecError
from aebench.layers.activations import activate
from aebench.spec.schema import shown

MAX_SIZE = 2**31 - 1
"""The largest layer size, kernel, stride or class count: what every framework indexes with 32 bits."""

Shape = tuple[int, ...]
Weights = dict[str, np.ndarray]
Role = Literal["kernel", "bias", "scale", "offset", "mean", "variance", "embedding", "count", "sum"]
"""How a parameter starts: 'kernel' draws from the spec's init law, 'bias', 'offset' and
'mean' are zeros, 'scale' and 'variance' are ones; 'embedding' (a (K, D) codebook) draws uniform in
[-1/K, 1/K) whatever the spec's law (PyTorch-VAE's VectorQuantizer); 'count' and 'sum' (an
exponential moving average's cluster sizes and sums) are zeros."""


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
    """A layer with its canonical name, shapes and parameters (those of the layers inside it
    included, in their order), and the planned layers inside it (``Where.nested``), if any."""

    name: str
    layer: Any
    in_shape: Shape
    out_shape: Shape
    params: tuple[Param, ...]
    children: tuple[LayerPlan, ...] = ()

    def weight(self, weights: Weights, role: str) -> np.ndarray:
        """This layer's parameter ``role`` ('kernel', 'bias') from canonical weights."""
        return weights[f"{self.name}.{role}"]


class Where:
    """Where a layer sits: its canonical name and spec path, how to fail there, and the layers
    planned inside it (``nested``)."""

    def __init__(self, file: str, name: str, path: str):
        self.file, self.name, self.path = file, name, path
        self.children: list[LayerPlan] = []

    def error(self, field: str, message: str) -> SpecError:
        """A SpecError naming ``path.field`` (the layer itself when ``field`` is "")."""
        return SpecError(self.file, f"{self.path}.{field}" if field else self.path, message)

    def nested(self, layer: Any, shape: Shape, name: str, field: str) -> LayerPlan:
        """Plan ``layer`` inside this one, on ``shape``: canonical name ``{self.name}.{name}``,
        spec path ``{self.path}.{field}``. It becomes one of this layer's ``children``."""
        plan = plan_layer(layer, shape, Where(self.file, f"{self.name}.{name}", f"{self.path}.{field}"))
        self.children.append(plan)
        return plan


Planner = Callable[[Any, Shape, Where], tuple[Shape, tuple[Param, ...]]]
"""(layer, input shape, where) -> (output shape, parameters); raises where.error(...)."""
Oracle = Callable[[LayerPlan, Weights, np.ndarray], np.ndarray]
"""(plan, float64 weights, float64 input batch) -> the layer's output before its activation."""
TrainOracle = Callable[[LayerPlan, Weights, np.ndarray, Mapping[str, np.ndarray]], tuple[np.ndarray, Weights]]
"""(plan, weights, batch, the batch's injected draws by canonical layer name: a kind that
``draws`` reads its own, a layer holding layers passes them on) -> (training-mode output before
the activation, the updated state by canonical name)."""


class Tape:
    """What one oracle forward pass records besides its output.

    taps: by canonical layer name, the intermediates a layer exposes to the loss terms (a
    vector quantizer's 'input', 'codes' and 'indices'), float64 in the canonical layout.
    held: every value the pass holds constant for differentiation, by key (what the
    frameworks compute under stop_gradient / ``.detach()``, and a discrete choice such as an
    argmin). A tape made by ``replay`` returns the recorded values instead of the ones the pass
    computes, so a finite difference of the oracle moves only what autodiff differentiates:
    its quotient is the derivative of the surrogate whose gradient the frameworks compute (the
    straight-through estimator's), not of the piecewise-constant loss.
    """

    def __init__(self, held: Optional[dict[str, np.ndarray]] = None):
        self.taps: dict[str, dict[str, np.ndarray]] = {}
        self.replaying = held is not None
        self.held: dict[str, np.ndarray] = {} if held is None else held

    def tap(self, layer: str, **values: np.ndarray) -> None:
        """Expose ``values`` of the layer ``layer`` to the loss terms."""
        self.taps.setdefault(layer, {}).update(values)

    def stop_gradient(self, key: str, value: np.ndarray) -> np.ndarray:
        """``value``, recorded under ``key``; on a replaying tape, the value recorded there instead."""
        if self.replaying:
            return self.held[key]
        self.held[key] = value
        return value

    def replay(self) -> Tape:
        """A new tape that holds what this one recorded (its taps start empty)."""
        return Tape(dict(self.held))


TapedOracle = Callable[[LayerPlan, Weights, np.ndarray, Optional[Weights], Mapping[str, np.ndarray], Tape], np.ndarray]
"""(plan, weights, batch, the dict that receives the updated state in training mode or None in
evaluation mode, the batch's injected draws, the pass's tape) -> the output before the activation."""


def evaluation_of(taped: TapedOracle) -> Oracle:
    """A taped kind's ``oracle``: its forward pass in evaluation mode, on a tape of its own."""
    return lambda plan, weights, x: taped(plan, weights, x, None, {}, Tape())


def training_of(taped: TapedOracle) -> TrainOracle:
    """A taped kind's ``train_oracle``: its forward pass in training mode, on a tape of its own,
    and the state it updated."""

    def train(
        plan: LayerPlan, weights: Weights, x: np.ndarray, draws: Mapping[str, np.ndarray]
    ) -> tuple[np.ndarray, Weights]:
        updates: Weights = {}
        return taped(plan, weights, x, updates, draws, Tape()), updates

    return train


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
    its train_oracle receives; taped: for a kind that taps intermediates or holds values for
    differentiation (``Tape``), its forward pass in both modes, which apply_layer calls instead
    of ``oracle`` and ``train_oracle`` (those stay, with a tape of their own, for direct use);
    codes: for a kind that picks one of a finite set of codes per vector (its taps hold
    'indices', the pick of each vector), how many codes it picks from (code-usage figures and
    metrics read it).
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
    taped: Optional[TapedOracle] = None
    codes: Optional[Callable[[LayerPlan], int]] = None


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


KINDS: dict[str, LayerKind] = {}
"""Every layer kind by its spec ``type``; aebench.layers fills it (as LAYER_KINDS) on import."""


def kind_of(layer: Any) -> LayerKind:
    """The registered kind of a parsed layer."""
    return KINDS[layer.type]


def layer_schemas() -> Any:
    """The union a spec's layer entry parses into (told apart by ``type``)."""
    return Union[tuple(kind.schema for kind in KINDS.values())]


def plan_layer(layer: Any, shape: Shape, where: Where) -> LayerPlan:
    """The planned ``layer`` on input ``shape``, named and placed by ``where``; raises where.error(...)."""
    out, params = kind_of(layer).plan(layer, shape, where)
    return LayerPlan(where.name, layer, shape, out, params, tuple(where.children))


def apply_layer(
    plan: LayerPlan,
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights] = None,
    draws: Optional[Mapping[str, np.ndarray]] = None,
    tape: Optional[Tape] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 oracle of one planned layer: (pre-activation, output), its kind's oracle
    followed by its activation if it has one. With ``updates`` (a dict) the layer runs in
    training mode, its updated state is written there and a kind that ``draws`` takes its
    injected draw from ``draws`` (by canonical layer name: aebench.data.noise); without, in
    evaluation mode, and ``draws`` is not read. A ``taped`` kind records on ``tape`` (a
    throwaway one when None)."""
    kind = kind_of(plan.layer)
    if kind.taped is not None:
        pre = kind.taped(plan, weights, x, updates, draws or {}, Tape() if tape is None else tape)
    elif updates is not None and kind.train_oracle is not None:
        draws = draws or {}
        if kind.draws and plan.name not in draws:
            raise ValueError(f"layer {plan.name} ({kind.name}) runs in training mode without its injected draw")
        pre, new_state = kind.train_oracle(plan, weights, x, draws)
        updates.update(new_state)
    else:
        pre = kind.oracle(plan, weights, x)
    act = getattr(plan.layer, "activation", None)
    return pre, pre if act is None else activate(act, pre)
