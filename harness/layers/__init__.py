"""The layer registry: every module of this package that defines ``KIND`` is a layer kind.

Adding a layer kind is one module here (schema, shape rule, FLOPs, memory, oracle:
aebench.layers.base.LayerKind) plus one builder per backend, in that backend's table from
kind name to builder. Nothing else in the harness names a layer kind; tests find the new
kind through ``LAYER_KINDS``.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from typing import Any, Optional

import numpy as np

from aebench.errors import LayerNotImplemented
from aebench.layers.activations import Activation
from aebench.layers.base import (
    KINDS,
    LayerKind,
    LayerPlan,
    Tape,
    Weights,
    apply_layer,
    kind_of,
    layer_schemas,
    plan_layer,
)

__all__ = [
    "LAYER_KINDS",
    "LAYER_SCHEMAS",
    "Tape",
    "apply_layer",
    "check_implemented",
    "kind_of",
    "latent_head",
    "plan_layer",
    "run_stack",
    "spec_path",
    "walk",
]

_NOT_KINDS = {"base", "activations"}


def _discover() -> dict[str, LayerKind]:
    kinds = {}
    for found in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if found.name in _NOT_KINDS:
            continue
        kind: LayerKind = importlib.import_module(f"{__name__}.{found.name}").KIND
        kinds[kind.name] = kind
    return kinds


KINDS.update(_discover())
LAYER_KINDS: dict[str, LayerKind] = KINDS
"""Every layer kind, by the name a spec's ``type`` gives it."""

LAYER_SCHEMAS: Any = layer_schemas()
"""The union a spec's layer entry parses into (told apart by ``type``)."""


def run_stack(
    layers: Iterable[LayerPlan],
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights] = None,
    draws: Optional[Mapping[str, np.ndarray]] = None,
    tape: Optional[Tape] = None,
) -> np.ndarray:
    """The float64 oracle of a stack of planned layers (training mode with ``updates``, taps
    and held values on ``tape``: apply_layer)."""
    for plan in layers:
        x = apply_layer(plan, weights, x, updates, draws, tape)[1]
    return x


def latent_head(units: int, activation: Activation) -> Any:
    """The layer of a latent head (the code, or the mean and the log-variance): dense."""
    return LAYER_KINDS["dense"].schema("dense", units, activation)


def walk(layers: Iterable[LayerPlan]) -> Iterator[LayerPlan]:
    """Every planned layer, each followed by the layers inside it (depth first, in plan order)."""
    for plan in layers:
        yield plan
        yield from walk(plan.children)


def check_implemented(backend: str, kinds: Collection[str], layers: Iterable[LayerPlan]) -> None:
    """LayerNotImplemented for the first planned layer (nested ones included) whose kind is not in ``kinds``."""
    for plan in walk(layers):
        if plan.layer.type not in kinds:
            raise LayerNotImplemented(backend, plan.layer.type, spec_path(plan.name))


_INDEX = re.compile(r"\.([0-9]+)")


def spec_path(name: str) -> str:
    """The spec field of a canonical layer name: 'encoder.2' -> 'model.encoder[2]', 'z_mean' ->
    'model.latent'; nested layers 'encoder.2.layers.0' -> 'model.encoder[2].layers[0]'."""
    return "model." + _INDEX.sub(r"[\1]", name) if "." in name else "model.latent"
