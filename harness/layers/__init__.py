"""The layer registry: every module of this package that defines ``KIND`` is a layer kind.

Adding a layer kind is one module here (schema, shape rule, FLOPs, memory, oracle:
aebench.layers.base.LayerKind) plus one builder per backend, in that backend's table from
kind name to builder. Nothing else in the harness names a layer kind; tests find the new
kind through ``LAYER_KINDS``.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Optional, Union

import numpy as np

from aebench.errors import LayerNotImplemented
from aebench.layers.activations import Activation, activate
from aebench.layers.base import LayerKind, LayerPlan, Weights

_NOT_KINDS = {"base", "activations"}


def _discover() -> dict[str, LayerKind]:
    kinds = {}
    for found in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if found.name in _NOT_KINDS:
            continue
        kind: LayerKind = importlib.import_module(f"{__name__}.{found.name}").KIND
        kinds[kind.name] = kind
    return kinds


LAYER_KINDS: dict[str, LayerKind] = _discover()
"""Every layer kind, by the name a spec's ``type`` gives it."""

LAYER_SCHEMAS: Any = Union[tuple(kind.schema for kind in LAYER_KINDS.values())]
"""The union a spec's layer entry parses into (told apart by ``type``)."""


def kind_of(layer: Any) -> LayerKind:
    """The registered kind of a parsed layer."""
    return LAYER_KINDS[layer.type]


def apply_layer(
    plan: LayerPlan,
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights] = None,
    draws: Optional[Mapping[str, np.ndarray]] = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The float64 oracle of one planned layer: (pre-activation, output), its kind's oracle
    followed by its activation if it has one. With ``updates`` (a dict) the layer runs in
    training mode, its updated state is written there and a kind that ``draws`` takes its
    injected draw from ``draws`` (by canonical layer name: aebench.data.noise); without, in
    evaluation mode, and ``draws`` is not read."""
    kind = kind_of(plan.layer)
    if updates is not None and kind.train_oracle is not None:
        draw = None
        if kind.draws:
            if draws is None or plan.name not in draws:
                raise ValueError(f"layer {plan.name} ({kind.name}) runs in training mode without its injected draw")
            draw = np.asarray(draws[plan.name], dtype=np.float64)
        pre, new_state = kind.train_oracle(plan, weights, x, draw)
        updates.update(new_state)
    else:
        pre = kind.oracle(plan, weights, x)
    act = getattr(plan.layer, "activation", None)
    return pre, pre if act is None else activate(act, pre)


def run_stack(
    layers: Iterable[LayerPlan],
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights] = None,
    draws: Optional[Mapping[str, np.ndarray]] = None,
) -> np.ndarray:
    """The float64 oracle of a stack of planned layers (training mode with ``updates``: apply_layer)."""
    for plan in layers:
        x = apply_layer(plan, weights, x, updates, draws)[1]
    return x


def latent_head(units: int, activation: Activation) -> Any:
    """The layer of a latent head (the code, or the mean and the log-variance): dense."""
    return LAYER_KINDS["dense"].schema("dense", units, activation)


def check_implemented(backend: str, kinds: Collection[str], layers: Iterable[LayerPlan]) -> None:
    """LayerNotImplemented for the first planned layer whose kind is not in ``kinds``."""
    for plan in layers:
        if plan.layer.type not in kinds:
            raise LayerNotImplemented(backend, plan.layer.type, spec_path(plan.name))


def spec_path(name: str) -> str:
    """The spec field of a canonical layer name: 'encoder.2' -> 'model.encoder[2]', 'z_mean' -> 'model.latent'."""
    stack, _, index = name.partition(".")
    return f"model.{stack}[{index}]" if index else "model.latent"
