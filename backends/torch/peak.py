"""A large matmul in torch, for the device's measured peak (aebench.bench.peak)."""

from __future__ import annotations

import time

import torch

from aebench.plugins.bench_api import Precision


def timed_matmuls(n: int, dtype: str, precision: Precision, repeats: int) -> float:
    """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end, at the
    process's precision (``precision`` names it: it was applied when the backend loaded)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device) / n**0.5
    out = a @ a
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        out = a @ out
    sync()
    return time.perf_counter() - start
