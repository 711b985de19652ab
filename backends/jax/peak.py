"""A large matmul in JAX, for the device's measured peak (aebench.peak)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from aebench.bench_api import Precision


def timed_matmuls(n: int, dtype: str, precision: Precision, repeats: int) -> float:
    """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end."""
    level = jax.lax.Precision.DEFAULT if precision.tf32 else jax.lax.Precision.HIGHEST
    matmul = jax.jit(lambda a, b: jnp.matmul(a, b, precision=level))
    a = jax.random.normal(jax.random.PRNGKey(0), (n, n), dtype=jnp.dtype(dtype)) / n**0.5
    out = matmul(a, a).block_until_ready()
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a, out)
    out.block_until_ready()
    return time.perf_counter() - start
