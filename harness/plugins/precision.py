"""The process's precision: set once by the entry point, applied once per backend, read back.

Precision (TF32 or IEEE float32) is global state in every framework, so aebench treats it as
the process's: the entry point (``aebench train``, ``check`` and ``bench``, a bench cell's
process, a backend's worker process) calls ``set_process_precision`` before any backend
loads, and the registry calls ``apply_process_precision`` once for each backend, right after its
framework is imported and before anything is built. Nothing else sets a switch: a build, a
runner, a trainer or the peak matmul runs at what was applied.

What a framework reports after the switches are set (its read-back) is what results record,
never what was asked: ``switches_problem`` compares a read-back with what the backend says the
precision looks like in its framework (PrecisionModule.expected_switches), so a bench cell whose
switches moved between loading, the timed steps and the verification replay fails saying so.
"""

from __future__ import annotations

from typing import Optional

from aebench.errors import AebenchError
from aebench.plugins.bench_api import Precision
from aebench.plugins.plugin import Plugin

_requested: Optional[Precision] = None
_applied: set[str] = set()  # the backends set to the process's precision


def set_process_precision(precision: Precision) -> None:
    """The precision every backend loaded in this process is applied at. Set it before the
    first backend loads; setting it again to the same is a no-op, to another once a backend was
    applied is AebenchError (the frameworks' switches are process-wide: one would be left at
    the other precision)."""
    global _requested
    if _applied and precision != process_precision():
        raise AebenchError(
            f"precision {precision.describe()} asked, but this process already runs "
            f"{', '.join(sorted(_applied))} at {process_precision().describe()}: precision is set once per process"
        )
    _requested = precision


def process_precision() -> Precision:
    """The precision set for this process (ieee-fp32 where the entry point set none)."""
    return _requested or Precision()


def apply_process_precision(plugin: Plugin) -> dict[str, str]:
    """Set the process's precision in the framework of the just-loaded ``plugin`` and return
    what the framework reports; AebenchError when the read-back is not that precision. The
    registry calls it once per backend, right after ``plugin.load()``."""
    precision = process_precision()
    module = plugin.precision()
    switches = module.apply_precision(precision)
    problem = switches_problem(module.expected_switches(precision), switches)
    if problem:
        raise AebenchError(f"backend '{plugin.name}': {precision.describe()} was set, but {problem}")
    _applied.add(plugin.name)
    return switches


def switches_problem(expected: dict[str, str], found: dict[str, str]) -> str:
    """One line on the first switch that differs from ``expected`` ("" when none does)."""
    for switch, want in expected.items():
        got = found.get(switch, "(not read)")
        if got != want:
            return f"{switch} is {got}, not {want}"
    return ""


def check_switches(plugin: Plugin, precision: Precision, when: str) -> tuple[dict[str, str], str]:
    """The switches of ``plugin``'s framework read now, and one line on how they differ from
    ``precision`` ("" when they do not); ``when`` names the moment in that line."""
    found = plugin.precision().read_precision()
    problem = switches_problem(plugin.precision().expected_switches(precision), found)
    return found, f"precision {precision.describe()} {when}: {problem}" if problem else ""
