"""The device's measured peak: a large square matmul in the cell's own framework, cached.

A cell's achieved GFLOP/s is reported as a fraction of this figure, measured once per
(device, backend, dtype, precision) by ``backends/<name>/peak.py`` and kept in
``$AEBENCH_CACHE/device_peaks.json`` (default ~/.cache/aebench), so every later cell and
campaign on the same machine divides by the same number.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from aebench.plugins.backend_api import Backend
from aebench.plugins.bench_api import Precision
from aebench.plugins.plugin import PeakModule, Plugin

REPEATS, BLOCKS = 10, 3


def cache_path() -> Path:
    root = Path(os.environ.get("AEBENCH_CACHE", Path.home() / ".cache" / "aebench"))
    return root / "device_peaks.json"


def matmul_size(device: str) -> int:
    """Big enough to be compute bound: 8192 on an accelerator, 2048 on a CPU."""
    return 2048 if device == "cpu" else 8192


def device_peak_gflops(plugin: Plugin, backend: Backend, dtype: str, precision: Precision) -> float:
    """The cached peak for this backend's device, measured now if there is none."""
    key = f"{backend.device()}|{backend.name}|{dtype}|{precision.describe()}"
    path = cache_path()
    cache = json.loads(path.read_text()) if path.is_file() else {}
    if key not in cache:
        cache[key] = measure_peak_gflops(plugin.peak(), backend, dtype, precision)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=2, sort_keys=True))
        os.replace(tmp, path)
    return cache[key]


def measure_peak_gflops(peak: PeakModule, backend: Backend, dtype: str, precision: Precision) -> float:
    """Best of BLOCKS blocks of REPEATS n x n matmuls, 2 n^3 FLOPs each."""
    n = matmul_size(backend.device())
    seconds = min(peak.timed_matmuls(n, dtype, precision, REPEATS) for _ in range(BLOCKS))
    return 2 * n**3 * REPEATS / seconds / 1e9
