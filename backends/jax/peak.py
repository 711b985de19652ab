"""A large matmul in JAX, for the device's measured peak (aebench.bench.peak)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from aebench.plugins.bench_api import Precision

from .precision import allow_float64, applied_level


def timed_matmuls(n: int, dtype: str, precision: Precision, repeats: int) -> float:
    """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end, at the
    process's precision (``precision`` names it: it was applied when the backend loaded)."""
    allow_float64(dtype)
    level = applied_level()
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=level))
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype=jnp.dtype(dtype)) / n**0.5
    out = matmul(a, a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a, out)
    out.block_until_ready()
    return time.perf_counter() - start
