"""Across backends: every backend's gradients against the reference backend's float64
gradients, and its 50-step Adam trajectory against the reference backend's, for every
spec, in float64 and float32. The reference is the first available of torch, jax, keras."""

from __future__ import annotations

import functools

import pytest
from cases import backend_gradients, case_for  # tests/ is on sys.path (pytest prepend import mode)

from aebench.check import equivalence as eq
from aebench.check.suite import reference_rank
from aebench.plugins.registry import available_backends, load_backend


def reference_name() -> str:
    ranked = sorted(available_backends(), key=reference_rank)
    if not ranked:
        pytest.skip("no backend is available")
    return ranked[0]


def reference_gradients(spec_name: str):
    return backend_gradients(reference_name(), spec_name, "float64")


@functools.cache
def reference_trajectory(spec_name: str, dtype: str) -> eq.Trajectory:
    return eq.reference_trajectory(load_backend(reference_name()), case_for(spec_name, dtype))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gradients_agree_with_the_reference_backend(backend, spec_name: str, dtype: str) -> None:
    case = case_for(spec_name, dtype)
    got = backend_gradients(backend.name, spec_name, dtype)
    assert not eq.failures(
        eq.compare_gradients(eq.Judge(backend.name, dtype), got, reference_gradients(spec_name), case.plan)
    )


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fifty_adam_steps_agree_with_the_reference_backend(backend, spec_name: str, dtype: str) -> None:
    if backend.name == reference_name():
        pytest.skip(f"{backend.name} is the reference; every other backend is compared with it")
    case = case_for(spec_name, dtype)
    comparisons = eq.compare_trajectories(
        eq.Judge(backend.name, dtype),
        eq.trajectory(backend, case),
        reference_trajectory(spec_name, dtype),
        eq.term_names(case),
    )
    assert not eq.failures(comparisons)
