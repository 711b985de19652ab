"""Unstable timings are flagged (issue 17, item 1): the median's interval, the extra blocks of the
protocol, the verdict's reasons, and the report that never ranks an unstable cell as firm.

The protocol tests drive ``measure`` with a runner whose step times are scripted (the timing
code is what is under test; tests/test_bench.py times real frameworks against bare loops)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from aebench.bench.report import answer_line, compile_text, samples_figure, speed_table
from aebench.bench.stability import (
    MAX_BLOCKS_FACTOR,
    MAX_RELATIVE_WIDTH,
    MachineLoad,
    coverage,
    judge,
    median_interval,
    row_stability,
)
from aebench.bench.timing import Protocol, measure

ISSUE_BLOCKS_MS = [262.8, 190.3, 14.6, 12.1, 62.0, 24.7, 18.4]  # torch compiled ae on a loaded 2-core machine


def test_the_unstable_cell_of_the_issue_is_unstable_and_a_quiet_one_is_firm() -> None:
    loud = judge([b / 1e3 for b in ISSUE_BLOCKS_MS])
    assert not loud.firm and loud.label == "unstable"
    assert "interval" in loud.reason() and "CV" in loud.reason()
    quiet = judge([0.0100, 0.0101, 0.0099, 0.0100, 0.0102, 0.0100, 0.0101])
    assert quiet.firm and quiet.relative_width <= MAX_RELATIVE_WIDTH and quiet.reason() == ""


def test_the_interval_is_the_narrowest_order_statistics_with_95_percent_coverage() -> None:
    assert coverage(7, 1) == pytest.approx(1 - 2 / 128)  # (min, max) of 7
    assert coverage(7, 2) < 0.95  # so 7 blocks give (min, max)
    interval = median_interval(list(range(1, 22)))  # 21 blocks: ranks 6..16 cover 97.3%
    assert (interval.low, interval.high) == (6.0, 16.0) and interval.level == pytest.approx(0.9734, abs=1e-4)
    assert median_interval([3.0, 1.0, 2.0]).level == pytest.approx(0.75)  # too few blocks: stated, not hidden


def test_the_reasons_name_a_warm_up_and_a_busy_machine() -> None:
    falling = [0.020, 0.018, 0.016, 0.014, 0.012, 0.011, 0.0105]
    assert "still warming up" in judge(falling).reason()
    busy = MachineLoad(load_start=3.5, load_end=3.9, other_cores=1.6, cpus=2)
    assert (
        "machine busy: other processes used 1.6 of 2 cores" in judge([b / 1e3 for b in ISSUE_BLOCKS_MS], busy).reason()
    )
    overloaded = MachineLoad(load_start=1.0, load_end=5.0, other_cores=None, cpus=2)
    assert "load average 5.0 above its 2 usable cores" in judge([b / 1e3 for b in ISSUE_BLOCKS_MS], overloaded).reason()
    assert judge([0.01] * 7, busy).firm  # a busy machine alone does not make narrow blocks unstable


class ScriptedRunner:
    """A StepRunner that does nothing; scripted_measure gives its blocks their times."""

    steps_per_call = 1

    def __init__(self) -> None:
        self.calls = 0

    def dispatch(self) -> int:
        self.calls += 1
        return self.calls

    def wait(self, handle: object) -> None:
        return None

    def losses(self, handles: list) -> np.ndarray:
        return np.ones(len(handles))

    def peak_memory_bytes(self) -> None:
        return None


def scripted_measure(step_ms: list[float], blocks: int) -> tuple:
    """measure() over a runner whose blocks last the scripted times (the clock is patched per block)."""
    import aebench.bench.timing as timing

    runner = ScriptedRunner()
    planned = iter(step_ms)
    real = timing.timed_calls

    def timed_calls(r, calls):
        if calls == 1:  # the first call and the warm-up
            return real(r, calls)
        seconds, handle = real(r, calls)
        return next(planned) / 1e3 * calls, handle

    timing.timed_calls = timed_calls
    try:
        protocol = Protocol(warmup_seconds=0.0, min_warmup_calls=1, blocks=blocks, block_seconds=0.001)
        return measure(runner, protocol)
    finally:
        timing.timed_calls = real


def test_a_wide_cell_measures_more_blocks_and_a_firm_one_does_not() -> None:
    firm = scripted_measure([10.0, 10.1, 9.9, 10.0, 10.2, 10.0, 10.1], blocks=7)
    assert len(firm.block_step_seconds) == 7 and firm.stability.firm
    noisy = [10.0, 14.0] * 20
    timing = scripted_measure(noisy, blocks=5)
    assert len(timing.block_step_seconds) == 5 * MAX_BLOCKS_FACTOR  # the budget, then reported as it is
    assert not timing.stability.firm


def test_blocks_still_getting_faster_move_to_the_warm_up_and_fresh_ones_decide() -> None:
    warming = [30.0, 25.0, 20.0, 16.0, 12.0, 11.0, 10.5]
    steady = [10.0, 10.1, 10.0, 9.9, 10.0, 10.1, 10.0]
    timing = scripted_measure(warming + steady, blocks=7)
    assert [round(b * 1e3, 6) for b in timing.warmup_block_seconds] == warming
    assert [round(b * 1e3, 6) for b in timing.block_step_seconds] == steady
    assert timing.stability.firm


def test_too_few_blocks_for_a_90_percent_interval_measure_more_and_are_never_firm() -> None:
    timing = scripted_measure([10.0] * 5, blocks=3)
    assert len(timing.block_step_seconds) == 5 and timing.stability.firm  # 2 more blocks reach 93.8%
    few = judge([0.010, 0.010, 0.010])
    assert not few.firm and few.reason() == "only 3 blocks: their interval covers the median with 75% (< 90%)"
    assert few.interval_text() == "10-10 (75%)"


def test_blocks_are_moved_to_the_warm_up_only_while_the_budget_leaves_room_for_fresh_ones() -> None:
    timing = scripted_measure([30.0, 25.0, 20.0, 16.0, 12.0, 11.0], blocks=2)  # budget: 6 blocks
    assert timing.warmup_block_seconds == () and len(timing.block_step_seconds) == 6
    assert "still warming up" in timing.stability.reason()


def test_a_measured_cell_records_the_machine_load() -> None:
    timing = scripted_measure([10.0] * 7, blocks=7)
    assert timing.load is not None and timing.load.cpus >= 1
    assert timing.load.other_cores is None or timing.load.other_cores >= 0


def row(backend: str, mode: str, blocks_ms: list[float], verified: float = 1e-7) -> dict:
    median = float(np.median(blocks_ms))
    return {
        "key": f"toy|{backend}|{mode}",
        "spec": "toy",
        "backend": backend,
        "mode": mode,
        "status": "ok",
        "batch_size": 100,
        "median_step_ms": median,
        "iqr_step_ms": float(np.subtract(*np.percentile(blocks_ms, [75, 25]))),
        "cv": float(np.std(blocks_ms, ddof=1) / np.mean(blocks_ms)),
        "samples_per_s": 100 * 1e3 / median,
        "compile_s": 0.5,
        "gflops_per_s": 1.0,
        "peak_fraction": 0.01,
        "peak_memory_mb": 100.0,
        "verify_max_rel_diff": verified,
        "block_step_ms": json.dumps(blocks_ms),
    }


def issue_cells() -> pd.DataFrame:
    """The issue's campaign: torch compiled unstable and fastest by its median, jax compiled firm."""
    return pd.DataFrame(
        [row("torch", "compiled", ISSUE_BLOCKS_MS), row("jax", "compiled", [30.0, 30.3, 29.9, 30.1, 30.0, 30.2])]
    )


def test_an_unstable_cell_is_never_ranked_as_firm() -> None:
    table = speed_table(issue_cells()).set_index("backend")
    assert table.loc["jax", "x fastest"] == "1.00"  # the fastest firm cell, though torch's median is lower
    assert table.loc["torch", "x fastest"] == "(0.82)" and table.loc["torch", "status"] == "ok, UNSTABLE"
    answer = answer_line(issue_cells())
    assert answer.startswith("Fastest: jax compiled") and "not ranked: torch compiled" in answer
    assert "equivalent" in answer


def test_the_answer_says_firm_when_every_cell_is() -> None:
    cells = pd.DataFrame([row("torch", "eager", [20.0, 20.1, 19.9] * 2), row("jax", "eager", [10.0, 10.1, 9.9] * 2)])
    answer = answer_line(cells)
    assert answer.startswith("Fastest: jax eager") and "torch eager 2.00x" in answer and answer.endswith("; firm.")
    assert "not separable" not in answer


def test_the_answer_says_when_the_fastest_is_not_separable_from_the_next() -> None:
    cells = pd.DataFrame([row("torch", "eager", [10.2, 10.3, 10.1] * 2), row("jax", "eager", [10.0, 10.25, 9.9] * 2)])
    assert "Fastest: jax eager, 10 ms/step (not separable from torch eager: their intervals overlap)" in answer_line(
        cells
    )


def test_the_plot_marks_an_unstable_cell() -> None:
    figure = samples_figure(issue_cells(), "toy", {"torch": "C0", "jax": "C1"})
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert "torch compiled (unstable)" in labels and "jax compiled" in labels
    hatched = [p.get_hatch() for p in figure.axes[0].patches]
    assert hatched.count("//") == 1


def test_rows_of_older_campaigns_are_judged_from_their_blocks() -> None:
    assert not row_stability(row("torch", "compiled", ISSUE_BLOCKS_MS)).firm
    recorded = {**row("jax", "eager", [10.0, 10.0]), "stability": "unstable", "ci_low_ms": 5.0, "ci_high_ms": 20.0}
    recorded.update(ci_level=0.98, ci_rel_width=1.5, unstable_reason="a; b")
    assert row_stability(recorded).reasons == ("a", "b")  # the row's own verdict wins


def test_a_negative_compile_time_is_below_resolution() -> None:
    assert compile_text(-0.49) == "below resolution" and compile_text(1.234) == "1.23"


def test_the_load_probe_sees_another_busy_process() -> None:
    from aebench.bench.load import LoadProbe

    spin = "import time\nend = time.perf_counter() + 1.5\nwhile time.perf_counter() < end: pass\n"
    probe = LoadProbe().start()
    subprocess.run([sys.executable, "-c", spin], check=True, timeout=60)
    load = probe.stop()
    if load.other_cores is None:
        pytest.skip("no /proc/stat here")
    assert load.other_cores >= 0.5  # the child spun one core for most of the window
