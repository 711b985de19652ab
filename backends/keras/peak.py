"""A large matmul in Keras (keras.ops on its engine), for the device's measured peak."""

from __future__ import annotations

import time

import numpy as np
from keras import ops

from aebench.plugins.bench_api import Precision

from .engines import engine
from .precision import allow_float64


def timed_matmuls(n: int, dtype: str, precision: Precision, repeats: int) -> float:
    """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end, at the
    process's precision (``precision`` names it: it was applied when the backend loaded)."""
    allow_float64(dtype)
    a = ops.convert_to_tensor(np.random.default_rng(0).standard_normal((n, n)).astype(dtype) / n**0.5)
    matmul = compiled_matmul()
    out = matmul(a, a)
    sync(out)
    start = time.perf_counter()
    for _ in range(repeats):
        out = matmul(a, out)
    sync(out)
    return time.perf_counter() - start


def compiled_matmul():
    """keras.ops.matmul, compiled the way the engine compiles a training step."""
    name = engine()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.function(ops.matmul, jit_compile=True)
    if name == "jax":
        import jax

        return jax.jit(ops.matmul)
    return ops.matmul


def sync(x) -> None:
    """Wait until x is computed: a host copy of one element is a sync on every engine."""
    ops.convert_to_numpy(x[0, 0])
