"""Whether a cell's step time is firm: a confidence interval of its median and the rule on it.

A cell's blocks are repeated measurements of one step time. Their median is reported with a
distribution-free confidence interval (order statistics: no assumption that block times are
normal, which they are not when a machine is shared), and the cell is *firm* when that
interval is narrower than MAX_RELATIVE_WIDTH of the median. Otherwise the protocol measures
more blocks, up to MAX_BLOCKS_FACTOR times the planned number (aebench.bench.timing); a cell
still too wide then is *unstable*, with the reasons it shows: its blocks were still getting
faster (warming up), the machine was busy (aebench.bench.load), or its blocks were noisy.
Nothing ranks an unstable cell as if it were firm (aebench.bench.report).

The thresholds, stated once:
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import numpy as np

CONFIDENCE = 0.95
"""Coverage asked of the median's interval (the usual 95%). With fewer than 6 blocks no pair of
order statistics reaches it: the widest pair (min, max) is reported with its own coverage."""

MIN_COVERAGE = 0.90
"""A cell is never firm on fewer blocks than give its interval this coverage: 5 blocks give
(min, max) 93.8%, 4 blocks only 87.5%, 3 blocks 75%. (Requiring the full 95% would take 6
blocks and call every 5-block campaign measured so far unstable on that ground alone.)"""

MAX_RELATIVE_WIDTH = 0.10
"""A cell is firm when its interval is at most 10% of its median wide. Ratios between cells
("x fastest") are meant to separate frameworks by 1.2x and more; two intervals of 10% cannot
swap such a pair. It is also pyperf's line: it warns when a benchmark's standard deviation
exceeds 10% of its mean. Quiet CPU cells measured here span 1-7% (2nd to 2nd-last block of 5)."""

MAX_BLOCKS_FACTOR = 3
"""An unstable cell measures more blocks, up to 3x the planned number (7 -> 21 at the
defaults: at most 14 more seconds per cell). More blocks narrow the interval of a noisy cell
(its ranks move inward) and outlast a slow warm-up; past 3x the cell is reported as it is."""

WARMING_TREND = -0.7
"""Blocks that keep getting faster (Spearman rank correlation of block time with block
number at or below -0.7: for 7 blocks in random order that happens with probability about
0.05) are said to be still warming up. The protocol then treats all blocks so far as warm-up
and measures fresh ones."""

BUSY_OTHER_CORES = 1.0
"""The machine was busy when other processes kept at least one core busy on average while the
cell was timed, or the load average exceeded the usable cores."""


@dataclass(frozen=True)
class Interval:
    """A confidence interval of the median block step time (same unit as the blocks), with the
    coverage its order statistics give."""

    low: float
    high: float
    level: float

    def relative_width(self, median: float) -> float:
        """(high - low) / median."""
        return (self.high - self.low) / median if median > 0 else math.inf


def median_interval(blocks: Sequence[float]) -> Interval:
    """The narrowest pair of order statistics (x_k, x_{n+1-k}) covering the median with at least
    CONFIDENCE (binomial with p = 1/2), else (min, max) with its coverage."""
    values = np.sort(np.asarray(blocks, dtype=float))
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, 0.0)
    best_k, best_level = 1, coverage(n, 1)
    for k in range(2, n // 2 + 1):
        level = coverage(n, k)
        if level < CONFIDENCE:
            break
        best_k, best_level = k, level
    return Interval(float(values[best_k - 1]), float(values[n - best_k]), best_level)


def coverage(n: int, k: int) -> float:
    """P(x_k <= median <= x_{n+1-k}) for n independent draws: 1 - 2 P(Binomial(n, 1/2) < k)."""
    below = sum(math.comb(n, i) for i in range(k)) / 2**n
    return max(0.0, 1.0 - 2.0 * below)


def trend(blocks: Sequence[float]) -> float:
    """Spearman rank correlation of block time with block number (-1: every block faster)."""
    n = len(blocks)
    if n < 3:
        return 0.0
    ranks = np.argsort(np.argsort(np.asarray(blocks, dtype=float), kind="stable"), kind="stable")
    order = np.arange(n)
    if ranks.std() == 0:
        return 0.0
    return float(np.corrcoef(order, ranks)[0, 1])


def warming_up(blocks: Sequence[float]) -> bool:
    """Whether the blocks are still getting faster (WARMING_TREND)."""
    return len(blocks) >= 5 and trend(blocks) <= WARMING_TREND


@dataclass(frozen=True)
class MachineLoad:
    """The machine while a cell was timed: load averages (1 min) at start and end, the CPU
    other processes used (in cores, None where /proc/stat is not readable) and the usable cores."""

    load_start: float
    load_end: float
    other_cores: Optional[float]
    cpus: int

    def busy_reason(self) -> str:
        """Why the machine counts as busy (BUSY_OTHER_CORES), or "" when it does not."""
        load = max(self.load_start, self.load_end)
        if self.other_cores is not None and self.other_cores >= BUSY_OTHER_CORES:
            return f"machine busy: other processes used {self.other_cores:.1f} of {self.cpus} cores"
        if load > self.cpus:
            return f"machine busy: load average {load:.1f} above its {self.cpus} usable cores"
        return ""


@dataclass(frozen=True)
class Stability:
    """The verdict on a cell's blocks: firm or unstable, the interval, and why."""

    interval: Interval
    relative_width: float
    firm: bool
    reasons: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """'firm' or 'unstable'."""
        return "firm" if self.firm else "unstable"

    def reason(self) -> str:
        """The reasons in one phrase ('' when firm)."""
        return "; ".join(self.reasons)

    def interval_text(self, scale: float = 1e3, unit: str = "") -> str:
        """'low-high' of the interval (in ms by default) followed by ``unit``, with its coverage
        where it is below CONFIDENCE."""
        low, high = self.interval.low * scale, self.interval.high * scale
        below = f" ({self.interval.level:.0%})" if self.interval.level < CONFIDENCE else ""
        return f"{low:.4g}-{high:.4g}{unit}{below}"


def judge(blocks: Sequence[float], load: Optional[MachineLoad] = None) -> Stability:
    """Firm when the median's interval is at most MAX_RELATIVE_WIDTH wide; an unstable verdict
    names what the blocks and the machine show (warming up, busy machine, noisy blocks)."""
    interval = median_interval(blocks)
    median = float(np.median(blocks)) if len(blocks) else math.nan
    width = interval.relative_width(median)
    enough = interval.level >= MIN_COVERAGE
    if width <= MAX_RELATIVE_WIDTH and enough:
        return Stability(interval, width, True)
    counted = f"{len(blocks)} block{'s' if len(blocks) != 1 else ''}"
    too_few = f"only {counted}: their interval covers the median with {interval.level:.0%} (< {MIN_COVERAGE:.0%})"
    reasons = [] if enough else [too_few]
    if warming_up(blocks):
        reasons.append(f"still warming up (blocks getting faster, trend {trend(blocks):.2f})")
    busy = load.busy_reason() if load is not None else ""
    if busy:
        reasons.append(busy)
    cv = float(np.std(blocks, ddof=1) / np.mean(blocks)) if len(blocks) > 1 else math.nan
    if width > MAX_RELATIVE_WIDTH:
        reasons.append(
            f"interval {100 * width:.0f}% of the median wide (limit {100 * MAX_RELATIVE_WIDTH:.0f}%), "
            f"blocks spread {100 * cv:.0f}% (CV)"
        )
    return Stability(interval, width, False, tuple(reasons))


def row_figures(stability: Stability, load: Optional[MachineLoad]) -> dict:
    """The columns a cell's row carries: the interval (ms), its coverage, the verdict and the load."""
    figures = {
        "ci_low_ms": stability.interval.low * 1e3,
        "ci_high_ms": stability.interval.high * 1e3,
        "ci_level": round(stability.interval.level, 4),
        "ci_rel_width": stability.relative_width,
        "stability": stability.label,
        "unstable_reason": stability.reason(),
    }
    if load is not None:
        figures.update(
            load_start=load.load_start,
            load_end=load.load_end,
            other_cores=load.other_cores,
            cpus=load.cpus,
        )
    return figures


def row_stability(row: dict) -> Stability:
    """The verdict of a recorded row: its own columns where it has them, else judged again from
    its block times (rows of an aebench before this rule; no load was recorded for them)."""
    blocks = json.loads(row["block_step_ms"]) if isinstance(row.get("block_step_ms"), str) else []
    if isinstance(row.get("stability"), str) and row["stability"] in ("firm", "unstable"):
        interval = Interval(float(row["ci_low_ms"]) / 1e3, float(row["ci_high_ms"]) / 1e3, float(row["ci_level"]))
        reasons = tuple(r for r in str(row.get("unstable_reason") or "").split("; ") if r)
        return Stability(interval, float(row["ci_rel_width"]), row["stability"] == "firm", reasons)
    return judge([b / 1e3 for b in blocks])
