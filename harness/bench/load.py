"""How busy the machine was while a cell was timed: load averages and other processes' CPU.

The CPU other processes used is the machine's busy CPU time (``/proc/stat``) minus this
process' own (``os.times``), over the wall time between ``start`` and ``stop``; where
``/proc/stat`` cannot be read (not Linux) only the load averages are kept.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aebench.bench.stability import MachineLoad

PROC_STAT = Path("/proc/stat")
BUSY_FIELDS = (0, 1, 2, 5, 6, 7)  # user, nice, system, irq, softirq, steal (idle and iowait are not busy)


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def load_average() -> float:
    """The 1-minute load average (0 where the system has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return 0.0


def machine_busy_seconds() -> Optional[float]:
    """CPU seconds the whole machine has spent busy since boot, or None where unknown."""
    try:
        fields = PROC_STAT.read_text().splitlines()[0].split()[1:]
        ticks = sum(int(fields[i]) for i in BUSY_FIELDS if i < len(fields))
    except (OSError, ValueError, IndexError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


@dataclass
class LoadProbe:
    """Started before a cell's timed blocks, stopped after them; ``stop()`` gives the MachineLoad."""

    wall: float = 0.0
    load: float = 0.0
    busy: Optional[float] = None
    own: float = 0.0

    def start(self) -> LoadProbe:
        """Take the starting readings; returns self."""
        self.wall, self.load = time.perf_counter(), load_average()
        self.busy, self.own = machine_busy_seconds(), own_cpu_seconds()
        return self

    def stop(self) -> MachineLoad:
        """The readings since ``start``."""
        wall = max(time.perf_counter() - self.wall, 1e-9)
        busy = machine_busy_seconds()
        others = None
        if busy is not None and self.busy is not None:
            others = max(0.0, (busy - self.busy) - (own_cpu_seconds() - self.own)) / wall
        return MachineLoad(self.load, load_average(), others, usable_cpus())
