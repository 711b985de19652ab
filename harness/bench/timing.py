"""The timing protocol (DESIGN.md): first step apart, warm-up, timed blocks, statistics.

Only the harness' clock decides what is timed. A block dispatches ``calls`` calls of the
runner back to back, keeping nothing but the last handle (exactly a bare loop), and syncs
the device once, at its end; its step time is the block's wall time over its steps. The
first call (compilation included) is timed on its own and never enters the steady-state
figures. Losses are read back outside the timed blocks: every step of the first call and
the warm-up (the loss curve, and the steps replayed by the cell's check), then the last
step of each block. A cell that is not firm after its planned blocks measures more
(aebench.bench.stability). (Keeping every handle alive slowed TensorFlow's dispatch by 40%.)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from aebench.bench.load import LoadProbe
from aebench.bench.stability import MAX_BLOCKS_FACTOR, MachineLoad, Stability, judge, warming_up
from aebench.plugins.bench_api import StepRunner
from aebench.spec.schema import at_least, greater_than, rule


@dataclass(frozen=True)
class Protocol:
    """How long to measure: ``warmup_seconds`` (at least ``min_warmup_calls`` calls) after the
    first call, then ``blocks`` blocks of at least ``block_seconds`` each (the number of
    calls per block is fixed from the warm-up's pace), never more than ``max_steps`` steps; a
    cell that is not firm measures more blocks, up to ``max_blocks_factor`` times ``blocks`` in
    all (1: never more than ``blocks``)."""

    warmup_seconds: float = field(default=1.0, metadata=rule(at_least(0)))
    min_warmup_calls: int = field(default=3, metadata=rule(at_least(1)))
    blocks: int = field(default=7, metadata=rule(at_least(1)))
    block_seconds: float = field(default=1.0, metadata=rule(greater_than(0)))
    max_steps: int = field(default=200_000, metadata=rule(at_least(1)))
    max_blocks_factor: int = field(default=MAX_BLOCKS_FACTOR, metadata=rule(at_least(1)))


@dataclass(frozen=True)
class Timing:
    """What one cell measured. Times in seconds; block_step_seconds holds every block's
    mean step time, the statistics below are computed from it."""

    first_call_seconds: float
    steps_per_call: int
    warmup_calls: int
    calls_per_block: int
    block_step_seconds: tuple[float, ...]
    losses: np.ndarray  # total loss at loss_steps
    loss_steps: np.ndarray  # 1-based step numbers: every step of the first call and warm-up, then each block's last
    warmup_block_seconds: tuple[float, ...] = ()  # blocks moved to the warm-up: they were still getting faster
    load: Optional[MachineLoad] = None

    @property
    def stability(self) -> Stability:
        """Whether the median is firm (aebench.bench.stability), judged with the machine's load."""
        return judge(self.block_step_seconds, self.load)

    @property
    def consecutive_steps(self) -> int:
        """How many of the first losses are of steps 1, 2, 3, ... (the first call and warm-up)."""
        return (1 + self.warmup_calls) * self.steps_per_call

    @property
    def steps_per_block(self) -> int:
        return self.calls_per_block * self.steps_per_call

    @property
    def median_step_seconds(self) -> float:
        return float(np.median(self.block_step_seconds))

    @property
    def iqr_step_seconds(self) -> float:
        q1, q3 = np.percentile(self.block_step_seconds, [25, 75])
        return float(q3 - q1)

    @property
    def cv(self) -> float:
        """Coefficient of variation of the block step times (std / mean)."""
        blocks = np.asarray(self.block_step_seconds)
        return float(blocks.std(ddof=1) / blocks.mean()) if len(blocks) > 1 else float("nan")

    @property
    def first_call_overhead_seconds(self) -> float:
        """Compilation and first-run cost: the first call minus a steady-state call."""
        return self.first_call_seconds - self.median_step_seconds * self.steps_per_call


def timed_calls(runner: StepRunner, calls: int) -> tuple[float, object]:
    """Dispatch ``calls`` calls back to back, sync once at the end; (seconds, last handle)."""
    start = time.perf_counter()
    for _ in range(calls):
        handle = runner.dispatch()
    runner.wait(handle)
    return time.perf_counter() - start, handle


def measure(runner: StepRunner, protocol: Protocol) -> Timing:
    """Run the protocol on a freshly prepared runner (its first call compiles). After the
    planned blocks, a cell that is not firm (aebench.bench.stability) measures more blocks, up
    to ``max_blocks_factor`` times the planned number: blocks still getting faster are moved to the
    warm-up and measured afresh; noisy ones are joined by more."""
    k = runner.steps_per_call
    first_seconds, handle = timed_calls(runner, 1)
    handles, warmup_calls, warmup_seconds = [handle], 0, 0.0
    while warmup_calls < protocol.min_warmup_calls or warmup_seconds < protocol.warmup_seconds:
        seconds, handle = timed_calls(runner, 1)
        warmup_calls, warmup_seconds = warmup_calls + 1, warmup_seconds + seconds
        handles.append(handle)
    losses = list(runner.losses(handles))
    steps = list(range(1, len(losses) + 1))
    calls = calls_per_block(warmup_seconds / warmup_calls, k, protocol, steps_taken=len(steps))
    blocks: list[float] = []
    discarded: list[float] = []
    probe = LoadProbe().start()

    def one_block() -> None:
        seconds, handle = timed_calls(runner, calls)
        blocks.append(seconds / (calls * k))
        losses.append(runner.losses([handle])[-1])
        steps.append(steps[-1] + calls * k)

    budget = protocol.blocks * protocol.max_blocks_factor
    while len(blocks) < protocol.blocks or not judge(blocks).firm:
        if len(blocks) + len(discarded) >= budget or not room_for_block(steps, calls, k, protocol):
            break
        room = budget - len(blocks) - len(discarded)
        if len(blocks) >= protocol.blocks and warming_up(blocks) and room >= protocol.blocks:
            discarded += blocks  # still getting faster: a warm-up, measured afresh while the budget allows
            blocks.clear()
        one_block()
    return Timing(
        first_seconds,
        k,
        warmup_calls,
        calls,
        tuple(blocks),
        np.asarray(losses),
        np.asarray(steps),
        warmup_block_seconds=tuple(discarded),
        load=probe.stop(),
    )


def room_for_block(steps: list[int], calls: int, steps_per_call: int, protocol: Protocol) -> bool:
    """Whether one more block stays within ``max_steps``."""
    return steps[-1] + calls * steps_per_call <= protocol.max_steps


def calls_per_block(call_seconds: float, steps_per_call: int, protocol: Protocol, steps_taken: int) -> int:
    """Enough calls for a block to last ``block_seconds``, within the step budget (which leaves
    room for the extra blocks of an unstable cell)."""
    wanted = max(1, math.ceil(protocol.block_seconds / max(call_seconds, 1e-9)))
    budget = (protocol.max_steps - steps_taken) // (protocol.blocks * protocol.max_blocks_factor * steps_per_call)
    if budget < 1:
        raise ValueError(f"max_steps {protocol.max_steps} leaves no room for {protocol.blocks} blocks")
    return min(wanted, budget)
