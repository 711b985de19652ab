"""Across backends: every backend's gradients against the reference backend's float64
gradients, and its 50-step Adam trajectory against the reference backend's, for every
spec, in float64 and float32. The reference is the first available of torch, jax, keras."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from cases import backend_gradients, case_for, cheap_backend  # tests/ is on sys.path (pytest prepend import mode)

from aebench.check import equivalence as eq
from aebench.check.suite import reference_rank
from aebench.check.tolerances import (
    GRAD_SPREAD_MARGIN,
    GRAD_TOL,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_STEPS,
)
from aebench.plugins.registry import available_backends, load_backend


def reference_name() -> str:
    ranked = sorted(available_backends(), key=reference_rank)
    if not ranked:
        pytest.skip("no backend is available")
    return ranked[0]


def reference_gradients(spec_name: str):
    return backend_gradients(reference_name(), spec_name, "float64")


@functools.cache
def reference_trajectory(spec_name: str, dtype: str, precision: str) -> eq.Trajectory:
    return eq.reference_trajectory(load_backend(reference_name()), case_for(spec_name, dtype), precision)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_agree_with_the_reference_backend(backend, spec_name: str, dtype: str) -> None:
    case, ref = case_for(spec_name, dtype), reference_gradients(spec_name)
    got = backend_gradients(backend.name, spec_name, dtype)
    spread = functools.partial(eq.gradient_rounding_spread, load_backend(reference_name()), case, ref)
    assert not eq.failures(eq.compare_gradients(eq.Judge(backend.name, dtype), got, ref, case.plan, spread))


@pytest.mark.slow
def test_fifty_adam_steps_agree_with_the_reference_backend(backend, trained_spec_name: str) -> None:
    """The semantic check of training: float64, every backend, on a set of specs with every part
    any spec is built from and every optimizer setting and kind of state (tests/conftest.py): a
    spec that only recombines checked parts at other widths or weights adds no new arithmetic
    (`aebench check SPEC` runs its trajectories; results/ holds them for every shipped spec)."""
    assert_fifty_adam_steps_agree(backend, trained_spec_name, "float64")


@pytest.mark.slow
def test_fifty_float32_adam_steps_stay_within_rounding_drift(backend, optimizer_spec_name: str) -> None:
    """float32 trajectories bound rounding drift: Adam and the state updates in float32 on top of
    float32 gradients, which every spec checks against the reference (test_gradients_agree...),
    so they run on a set of specs with every optimizer setting and kind of state
    (tests/conftest.py); `aebench check SPEC --dtype float32` runs them for any spec."""
    assert_fifty_adam_steps_agree(backend, optimizer_spec_name, "float32")


def assert_fifty_adam_steps_agree(backend, spec_name: str, dtype: str) -> None:
    if backend.name == reference_name():
        pytest.skip(f"{backend.name} is the reference; every other backend is compared with it")
    judge = eq.Judge(backend.name, dtype)
    case, ref = case_for(spec_name, dtype), reference_trajectory(spec_name, dtype, judge.trajectory_precision)
    if judge.trajectory_precision == "float64":  # the semantic check runs all its steps
        assert ref.steps == TRAJECTORY_STEPS, f"the test size is predictable for {ref.steps} steps: shrink it"
    comparisons = eq.compare_trajectories(judge, eq.trajectory(backend, case, ref.steps), ref, eq.term_names(case))
    assert not eq.failures(comparisons)


def at_relu_kinks(case: eq.Case) -> eq.Case:
    """The case with code unit j's bias set so that example j's input to it is 0 in float64
    (j < the batch size): float32 rounding puts each on either side of relu's kink."""
    x, kernel = case.batch.x, case.weights["code.kernel"]
    bias = case.weights["code.bias"].copy()
    for j in range(len(x)):
        bias[j] = -(x[j] @ kernel[:, j])
    return dataclasses.replace(case, weights=dict(case.weights, **{"code.bias": bias}), finite_differences={})


def test_a_float32_gradient_at_a_kink_is_held_to_the_reference_spread_and_a_wrong_one_is_not() -> None:
    """Where inputs sit on relu's kink, the reference's own float32 gradients from nudged starts
    spread far beyond GRAD_TOL in the layer before it, and only there: a backend's float32
    gradients pass within that spread, a gradient 1% off in another layer still fails, and
    float64 never asks for a spread."""
    backend = load_backend(cheap_backend())
    case64, case32 = (at_relu_kinks(case_for("ae", dtype)) for dtype in ("float64", "float32"))
    ref = eq.gradients(backend, case64)
    spread = eq.gradient_rounding_spread(backend, case32, ref)
    assert spread["code.kernel"] > 100 * GRAD_TOL["float32"]
    assert spread["decoder.0.kernel"] < GRAD_TOL["float32"] / GRAD_SPREAD_MARGIN
    judge = eq.Judge(backend.name, "float32")
    got = eq.gradients(backend, case32)
    assert not eq.failures(eq.compare_gradients(judge, got, ref, case32.plan, lambda: spread))
    wrong = dict(got, **{"decoder.0.kernel": got["decoder.0.kernel"] * 1.01})
    failed = eq.failures(eq.compare_gradients(judge, wrong, ref, case32.plan, lambda: spread))
    assert [f.split(":")[1] for f in failed] == ["decoder.0.kernel"]

    def never() -> dict[str, float]:
        raise AssertionError("float64 asked for a float32 rounding spread")

    wrong64 = dict(ref, **{"decoder.0.kernel": ref["decoder.0.kernel"] * 1.01})
    assert eq.failures(eq.compare_gradients(eq.Judge(backend.name, "float64"), wrong64, ref, case64.plan, never))


def test_a_chaotic_reference_is_compared_over_its_predictable_steps_only() -> None:
    """predictable_steps counts the steps before any loss term of the nudged run departs by more
    than the bound; a comparison against a reference cut there says so, and still fails a wrong weight."""
    ref_losses = np.ones((TRAJECTORY_STEPS, 2))
    nudged = ref_losses.copy()
    nudged[7:, 0] += np.geomspace(1e-12, 1.0, TRAJECTORY_STEPS - 7)
    bound = TRAJECTORY_LOSS_RTOL["float32"]
    total_steps = eq.predictable_steps(nudged, ref_losses, bound)
    assert 7 < total_steps < TRAJECTORY_STEPS
    assert nudged[total_steps, 0] - 1 > bound >= nudged[total_steps - 1, 0] - 1
    nudged[total_steps - 3 :, 1] += 2 * bound  # the second term parts three steps sooner
    steps = eq.predictable_steps(nudged, ref_losses, bound)
    assert steps == total_steps - 3
    assert eq.predictable_steps(ref_losses, ref_losses, bound) == TRAJECTORY_STEPS
    weights = {"w": np.ones(3)}
    ref = eq.Trajectory(ref_losses[:steps], weights)
    wrong = eq.Trajectory(ref_losses[:steps], {"w": np.array([1.0, 1.0, 2.0])})
    comparisons = eq.compare_trajectories(eq.Judge("torch", "float32"), wrong, ref, ("total", "kl"))
    assert all(f"first {steps} of {TRAJECTORY_STEPS}" in c.note for c in comparisons)
    assert [c.quantity for c in comparisons if not c.passed] == ["trajectory:w"]
