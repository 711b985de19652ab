"""The device's measured peak: a large square matmul in the cell's own framework, cached.

A cell's achieved GFLOP/s is reported as a fraction of this figure, measured per (device,
backend, dtype, precision) by ``backends/<name>/peak.py`` and kept in
``$AEBENCH_CACHE/device_peaks.json`` (default ~/.cache/aebench), so later cells and campaigns
on the same machine divide by the same number. A peak taken while the machine was busy is
too low (a cell then reached 175% of it), so every measurement records when it was taken
and the load average then, and the peak is measured again

- when a cell's achieved GFLOP/s exceeds it (the larger of the two is kept), and
- when a campaign asks for it (``aebench bench --remeasure-peak``: the new one replaces it).

The file keeps its first layout, ``{"<device>|<backend>|<dtype>|<precision>": GFLOP/s}``,
which older aebench versions read; the provenance of each entry (when, load, why, the
earlier measurements) is under the extra key ``"details"``, which no device key can equal.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Optional

from aebench.errors import AebenchError
from aebench.plugins.backend_api import Backend
from aebench.plugins.bench_api import Precision
from aebench.plugins.plugin import PeakModule, Plugin
from aebench.safe_files import read_json, write_text

REPEATS, BLOCKS = 10, 3
DETAILS = "details"
HISTORY_LENGTH = 10  # earlier measurements kept per entry


@dataclass(frozen=True)
class Peak:
    """A cached peak: GFLOP/s, when it was measured (ISO time and UNIX seconds; "" and None
    for an entry an older aebench cached), the 1-minute load average then, why it was
    (re)measured, and the highest GFLOP/s a cell reached above it that a new measurement did
    not beat (no cell re-measures again unless it goes higher still)."""

    gflops: float
    measured: str = ""
    measured_unix: Optional[float] = None
    load: Optional[float] = None
    reason: str = ""
    exceeded_by: Optional[float] = None

    def row_figures(self, achieved_gflops: float) -> dict:
        """The columns of a cell's row: the peak it was divided by and its provenance."""
        return {
            "device_peak_gflops": self.gflops,
            "peak_fraction": achieved_gflops / self.gflops if self.gflops else float("nan"),
            "peak_measured": self.measured or "unknown (cached by an older aebench)",
            "peak_load": self.load,
            "peak_reason": self.reason,
        }


def cache_path() -> Path:
    """$AEBENCH_CACHE/device_peaks.json (default ~/.cache/aebench); where that folder cannot be
    made or written (a HOME that is not writable), this user's folder in the temporary directory."""
    root = Path(os.environ.get("AEBENCH_CACHE", Path.home() / ".cache" / "aebench"))
    if not usable_folder(root):
        root = Path(tempfile.gettempdir()) / f"aebench-{os.getuid()}"
    return root / "device_peaks.json"


def usable_folder(folder: Path) -> bool:
    """Whether ``folder`` exists or can be made, is a real folder (not a link) and is writable."""
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and not folder.is_symlink() and os.access(folder, os.W_OK | os.X_OK)


def matmul_size(device: str) -> int:
    """Big enough to be compute bound: 8192 on an accelerator, 2048 on a CPU."""
    return 2048 if device == "cpu" else 8192


def peak_key(backend: Backend, dtype: str, precision: Precision) -> str:
    """The cache key of a backend's device, dtype and precision."""
    return f"{backend.device()}|{backend.name}|{dtype}|{precision.describe()}"


def read_cache(path: Path) -> dict:
    """The cache's content; {} when it is missing, a link, not a regular file or not a JSON object
    (it is then rewritten, or the peak is used uncached)."""
    try:
        cache = read_json(path)
    except (OSError, ValueError, AebenchError):
        return {}
    return cache if isinstance(cache, dict) else {}


def cached_peak(cache: dict, key: str) -> Optional[Peak]:
    """The cache's entry for ``key`` (either layout), or None."""
    value = cache.get(key)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return None
    details = as_dict(as_dict(cache.get(DETAILS)).get(key))
    return Peak(
        float(value),
        str(details.get("measured", "")),
        number_or_none(details.get("measured_unix")),
        number_or_none(details.get("load")),
        str(details.get("reason", "")),
        number_or_none(details.get("exceeded_by")),
    )


def as_dict(value: object) -> dict:
    """``value`` if it is a dict (a JSON object), else a new empty one."""
    return value if isinstance(value, dict) else {}


def as_list(value: object) -> list:
    """``value`` if it is a list (a JSON array), else a new empty one."""
    return list(value) if isinstance(value, list) else []


def number_or_none(value: object) -> Optional[float]:
    """A JSON number as a float; None for anything else."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def device_peak(
    plugin: Plugin,
    backend: Backend,
    dtype: str,
    precision: Precision,
    achieved_gflops: Optional[float] = None,
    fresh_since: Optional[float] = None,
) -> Peak:
    """The peak a cell divides by: the cached one, or one measured now when there is none,
    when it was measured before ``fresh_since`` (UNIX seconds; --remeasure-peak), or when
    ``achieved_gflops`` exceeds it and every cell before (the larger peak is kept)."""
    path, key = cache_path(), peak_key(backend, dtype, precision)
    cached = cached_peak(read_cache(path), key)
    if cached is None:
        return _store(path, key, measured_now(plugin, backend, dtype, precision, "first measurement"), [])
    if fresh_since is not None and (cached.measured_unix or 0) < fresh_since:
        reason = f"measured again on request (--remeasure-peak); it was {cached.gflops:.4g} GFLOP/s"
        return _store(path, key, measured_now(plugin, backend, dtype, precision, reason), [cached])
    if achieved_gflops is not None and achieved_gflops > max(cached.gflops, cached.exceeded_by or 0):
        reason = (
            f"measured again: a cell reached {achieved_gflops:.4g} GFLOP/s, above the cached {cached.gflops:.4g} "
            f"(measured {cached.measured or 'at an unknown time'}, load {describe_load(cached.load)})"
        )
        fresh = measured_now(plugin, backend, dtype, precision, reason)
        if fresh.gflops >= cached.gflops:
            return _store(path, key, fresh, [cached])
        kept = replace(cached, reason=f"{reason}; the new {fresh.gflops:.4g} is lower", exceeded_by=achieved_gflops)
        return _store(path, key, kept, [fresh])
    return cached


def describe_load(load: Optional[float]) -> str:
    """A load average in words."""
    return "unknown" if load is None else f"{load:.2f}"


def measured_now(plugin: Plugin, backend: Backend, dtype: str, precision: Precision, reason: str) -> Peak:
    """A fresh measurement, stamped with the time and the 1-minute load average before it."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    now = datetime.now().astimezone()
    gflops = measure_peak_gflops(plugin.peak(), backend, dtype, precision)
    return Peak(gflops, now.isoformat(timespec="seconds"), now.timestamp(), load, reason)


def _store(path: Path, key: str, peak: Peak, earlier: list[Peak]) -> Peak:
    """Write ``peak`` as the entry of ``key`` (the old layout's value plus its details), with
    the ``earlier`` measurements added to its history."""
    cache = read_cache(path)
    details = as_dict(cache.get(DETAILS))
    history = as_list(as_dict(details.get(key)).get("history"))
    history += [{"gflops": p.gflops, "measured": p.measured, "load": p.load} for p in earlier]
    cache[key] = peak.gflops
    details[key] = {
        "measured": peak.measured,
        "measured_unix": peak.measured_unix,
        "load": peak.load,
        "reason": peak.reason,
        "exceeded_by": peak.exceeded_by,
        "history": history[-HISTORY_LENGTH:],
    }
    cache[DETAILS] = details
    try:
        write_cache(path, cache)
    except (OSError, AebenchError) as exc:
        return replace(peak, reason=f"{peak.reason}; not cached ({getattr(exc, 'strerror', None) or exc})")
    return peak


def write_cache(path: Path, cache: dict) -> None:
    """Write the cache atomically, never through a link (aebench.safe_files); OSError or
    AebenchError when it cannot be written."""
    if not usable_folder(path.parent):
        raise OSError(f"{path.parent} is not a writable folder")
    write_text(path, json.dumps(cache, indent=2, sort_keys=True))


def device_peak_gflops(plugin: Plugin, backend: Backend, dtype: str, precision: Precision) -> float:
    """The cached peak for this backend's device, measured now if there is none."""
    return device_peak(plugin, backend, dtype, precision).gflops


def measure_peak_gflops(peak: PeakModule, backend: Backend, dtype: str, precision: Precision) -> float:
    """Best of BLOCKS blocks of REPEATS n x n matmuls, 2 n^3 FLOPs each."""
    n = matmul_size(backend.device())
    seconds = min(peak.timed_matmuls(n, dtype, precision, REPEATS) for _ in range(BLOCKS))
    return 2 * n**3 * REPEATS / seconds / 1e9
