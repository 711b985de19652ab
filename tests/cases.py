"""Cases and commands shared by the test modules (tests/ is on sys.path: pytest's prepend mode)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pytest

from aebench.check import equivalence as eq
from aebench.data.datasets import Dataset
from aebench.layers import kind_of, walk
from aebench.layers.base import LayerPlan, Where
from aebench.layers.conv import Conv
from aebench.layers.conv_transpose import ConvTranspose
from aebench.losses import present_terms
from aebench.plugins.backend_api import Backend
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import list_specs, load_spec
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec
from aebench.track.tracking import LogOutcome
from aebench.track.train_run import TrackedRun, TrackingOptions, tracked_training
from aebench.train.loop import train

TEST_SIZES = Path(__file__).parent / "test_sizes"
"""Shipped specs too large to compute in seconds, each at a test size that extends it."""


def suite_spec(spec_name: str) -> Spec:
    """The shipped spec as the suite computes it: its test size (TEST_SIZES) where it has one."""
    small = TEST_SIZES / f"{spec_name}.yaml"
    return load_spec(small if small.is_file() else spec_name)


@functools.cache
def case_for(spec_name: str, dtype: str) -> eq.Case:
    """The shipped spec's equivalence case in ``dtype`` (at its test size), built once per test session."""
    return eq.make_case(suite_spec(spec_name).replace(dtype=dtype))


@functools.cache
def backend_gradients(backend_name: str, spec_name: str, dtype: str) -> dict[str, np.ndarray]:
    """The backend's gradients on case_for(spec_name, dtype), computed once per test session:
    the finite-difference and the cross-backend tests judge the same arrays."""
    return eq.gradients(load_backend(backend_name), case_for(spec_name, dtype))


def oracle_layer(layer: Any, x: np.ndarray, **weights: np.ndarray) -> np.ndarray:
    """The oracle of one layer (before its activation) on the batch ``x``, planned at x's
    shape, with its parameters given by role (kernel=..., bias=...)."""
    kind = kind_of(layer)
    out_shape, params = kind.plan(layer, x.shape[1:], Where("<test>", "layer", "layer"))
    plan = LayerPlan("layer", layer, x.shape[1:], out_shape, params)
    return kind.oracle(plan, {f"layer.{role}": value for role, value in weights.items()}, x)


def conv2d(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """The oracle's convolution of x by an HWIO kernel."""
    layer = Conv("conv", kernel.shape[3], kernel.shape[0], stride, padding)
    return oracle_layer(layer, x, kernel=kernel, bias=bias)


def conv2d_transpose(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, padding: str) -> np.ndarray:
    """The oracle's transposed convolution of x by a (kh, kw, out, in) kernel."""
    layer = ConvTranspose("conv_transpose", kernel.shape[2], kernel.shape[0], stride, padding)
    return oracle_layer(layer, x, kernel=kernel, bias=bias)


Feature = tuple[str, str]


def built_parts(spec: Spec) -> set[Feature]:
    """What a compiled training step of ``spec`` is built from: its family, conditioning,
    corruption, loss terms, layer kinds, activations and output activation."""
    parts = {
        ("family", spec.model.family),
        ("conditional", str(spec.model.conditional)),
        ("corruption", type(spec.corruption).__name__),
        ("output", spec.model.output_activation),
    }
    parts |= {("term", name) for name in present_terms(spec.loss)}
    for planned in walk(plan_model(spec).layers):
        parts.add(("layer", type(planned.layer).__name__))
        activation = getattr(planned.layer, "activation", None)
        if activation is not None:
            parts.add(("activation", str(getattr(activation, "name", activation))))
    return parts


def optimizer_parts(spec: Spec) -> set[Feature]:
    """What a stock optimizer's trainer depends on in ``spec``: the optimizer's settings beyond
    the rates (schedule, weight decay) and the layer kinds that hold state it must not train."""
    optimizer = spec.optimizer
    parts = {("schedule", str(optimizer.schedule)), ("weight_decay", str(optimizer.weight_decay))}
    stateful = {type(p.layer).__name__ for p in walk(plan_model(spec).layers) if any(not w.trainable for w in p.params)}
    return parts | {("state", kind) for kind in stateful}


def trained_parts(spec: Spec) -> set[Feature]:
    """What a training trajectory of ``spec`` depends on: its built parts and its optimizer's."""
    return built_parts(spec) | optimizer_parts(spec)


@functools.cache
def covering_specs(parts: Callable[[Spec], set[Feature]]) -> list[str]:
    """Shipped specs that together have every part (``parts``) any shipped spec has, chosen
    greedily (most parts not yet covered first, then by name): a test that proves each part
    works needs only these, and a new spec with a new part joins them with no test edits."""
    have = {name: parts(suite_spec(name)) for name in list_specs()}
    missing, chosen = set().union(*have.values()), []
    while missing:
        best = max(sorted(have), key=lambda name: len(have[name] & missing))
        chosen.append(best)
        missing -= have[best]
    return sorted(chosen)


def cheap_backend() -> str:
    """The backend whose cells start fastest here (torch, else jax); skips without either."""
    backend = next((b for b in ("torch", "jax") if b in available_backends()), None)
    if backend is None:
        pytest.skip("neither torch nor jax is available")
    return backend


def bench_command(results: Path, name: str, *flags: str, batch: str = "16") -> list[str]:
    """``aebench bench`` of vae_toy, eager, on the cheap backend, as campaign ``name`` in ``results``."""
    return [
        sys.executable,
        "-m",
        "aebench.cli",
        "bench",
        "--specs",
        "vae_toy",
        "--backends",
        cheap_backend(),
        "--modes",
        "eager",
        "--batch-sizes",
        batch,
        "--name",
        name,
        "--results",
        str(results),
        *flags,
    ]


class AfterEpoch:
    """A TrainingListener that passes everything on to the tracked run ``inner``, then calls
    ``then(row)`` after each row: a crash, a Ctrl-C or a server stopping at a chosen epoch."""

    def __init__(self, inner: TrackedRun, then: Callable[[dict], None]):
        self.inner, self.then = inner, then

    def epoch(self, row: dict) -> None:
        self.inner.epoch(row)
        self.then(row)

    def scoring(self, params: dict[str, str]) -> None:
        self.inner.scoring(params)

    def scored(self, metrics: dict[str, float]) -> None:
        self.inner.scored(metrics)


def train_and_track(
    spec: Spec,
    backend: Backend,
    data: Dataset,
    out: Path,
    options: TrackingOptions,
    after_epoch: Optional[Callable[[dict], None]] = None,
) -> tuple[list[dict], LogOutcome]:
    """A training recorded as ``aebench train`` records it (without its progress lines and
    signal handlers): the metric rows and what became of the MLflow run."""
    with tracked_training(spec, backend, data, out, options) as run:
        listener = AfterEpoch(run, after_epoch) if after_epoch else run
        rows = train(spec, backend, data, out, listener=listener, quality=options.quality)
    return rows, run.outcome


_TORCH_SWITCHES = ("torch.backends.cuda.matmul.allow_tf32", "torch.backends.cudnn.allow_tf32")
_SWITCHES_BY_ENGINE = {
    "torch": {
        "ieee-fp32": {**dict.fromkeys(_TORCH_SWITCHES, "false"), "torch.float32_matmul_precision": "highest"},
        "tf32": {**dict.fromkeys(_TORCH_SWITCHES, "true"), "torch.float32_matmul_precision": "high"},
    },
    "jax": {
        "ieee-fp32": {"jax_default_matmul_precision": "highest"},
        "tf32": {"jax_default_matmul_precision": "tensorfloat32"},
    },
    "tensorflow": {
        "ieee-fp32": {"tf.config.experimental.tensor_float_32_execution_enabled": "false"},
        "tf32": {"tf.config.experimental.tensor_float_32_execution_enabled": "true"},
    },
}
_ENGINE = {"torch": "torch", "keras-torch": "torch", "jax": "jax", "keras-jax": "jax", "keras": "tensorflow"}


def switches_of(backend: str, precision: str) -> dict[str, str]:
    """What a built-in backend's framework reports of its precision switches at ``precision``,
    written out here, apart from the backends' own expected_switches."""
    return _SWITCHES_BY_ENGINE[_ENGINE[backend]][precision]
