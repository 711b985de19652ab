"""Tolerances chosen by device (issue 10, items 3 and 8): a CPU test of the logic that only a
GPU run exercises, and a check that the bounds cover what the H100 measured."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from aebench.check import equivalence as eq
from aebench.check.tolerances import (
    GPU_TRAJECTORY_LOSS_RTOL,
    GPU_TRAJECTORY_WEIGHT_TOL,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_WEIGHT_TOL,
    on_gpu,
    trajectory_tolerances,
)

H100_EVIDENCE = Path(__file__).resolve().parents[1] / "results" / "gpu-h100-2026-11-22" / "evidence"
H100_CHECK = H100_EVIDENCE / "check-float32-gpu.txt"


@pytest.mark.parametrize(
    ("device", "gpu"),
    [("cpu", False), ("cuda:0 (NVIDIA H100 80GB HBM3)", True), ("gpu:0 (NVIDIA H100 80GB HBM3)", True)],
)
def test_device_descriptions_of_every_backend_are_classified(device: str, gpu: bool) -> None:
    assert on_gpu(device) is gpu


def test_any_gpu_side_selects_the_gpu_bounds() -> None:
    assert trajectory_tolerances("float32", "cpu", "cpu") == (TRAJECTORY_LOSS_RTOL["float32"], 0.25)
    for pair in (("cpu", "cuda:0 (H100)"), ("gpu:0 (H100)", "cpu"), ("gpu:0 (H100)", "cuda:0 (H100)")):
        assert trajectory_tolerances("float32", *pair) == (
            GPU_TRAJECTORY_LOSS_RTOL["float32"],
            GPU_TRAJECTORY_WEIGHT_TOL["float32"],
        )
    assert trajectory_tolerances("float64", "cuda:0", "cuda:0") == (1e-8, 1e-8)


def drifted(losses_rel: float, weights_rel: float, device: str) -> tuple[eq.Trajectory, eq.Trajectory]:
    ref_losses = np.full((50, 2), 100.0)
    ref_weights = {"w": np.linspace(-1.0, 1.0, 11)}
    got_weights = {"w": ref_weights["w"] + weights_rel * np.eye(11)[0]}
    ref = eq.Trajectory(ref_losses, ref_weights, device)
    got = eq.Trajectory(ref_losses * (1 + losses_rel), got_weights, device)
    return got, ref


def test_a_gpu_sized_drift_passes_on_a_gpu_and_fails_on_a_cpu() -> None:
    """The drift the H100 showed on vae_conv (8.1e-3 losses, 0.365 weights)."""
    judge = eq.Judge("jax", "float32")
    for device, expect_pass in (("gpu:0 (NVIDIA H100 80GB HBM3)", True), ("cpu", False)):
        got, ref = drifted(8.1e-3, 0.365, device)
        failed = eq.failures(eq.compare_trajectories(judge, got, ref, ("total", "reconstruction")))
        assert (not failed) is expect_pass, (device, failed)


def test_a_semantic_sized_drift_fails_even_on_a_gpu() -> None:
    judge = eq.Judge("jax", "float32")
    got, ref = drifted(0.1, 1.0, "cuda:0 (NVIDIA H100 80GB HBM3)")
    assert len(eq.failures(eq.compare_trajectories(judge, got, ref, ("total", "reconstruction")))) == 3


def test_the_gpu_bounds_cover_every_trajectory_the_h100_measured() -> None:
    rows = re.findall(
        r"^(\S+)\s+(\S+)\s+float32\s+50-step (losses|weights) vs reference\s+(\S+)", H100_CHECK.read_text(), re.M
    )
    assert len(rows) == 8  # vae_dense and vae_conv x jax and keras-jax x losses and weights
    for spec, backend, kind, error in rows:
        bound = GPU_TRAJECTORY_LOSS_RTOL["float32"] if kind == "losses" else GPU_TRAJECTORY_WEIGHT_TOL["float32"]
        assert float(error) <= bound, (spec, backend, kind, error)
    assert max(float(e) for *_, kind, e in rows if kind == "weights") > TRAJECTORY_WEIGHT_TOL["float32"]


def test_a_known_gap_loosens_a_bound_and_never_tightens_it() -> None:
    """keras-torch's float64 trajectory gap (5e-3) against a bound its reference's rounding
    spread had already widened to 1.58e-2 (vae_conv_bn64 at the shipped size): the wider holds."""
    judge = eq.Judge("keras-torch", "float64")
    widened = judge("trajectory:loss:total", 1e-2, 1.58e-2)
    assert (widened.tolerance, widened.gap, widened.passed) == (1.58e-2, "", True)
    tight = judge("trajectory:loss:total", 1e-3, TRAJECTORY_LOSS_RTOL["float64"])
    assert tight.tolerance == 5e-3 and "float32" in tight.gap and tight.passed
