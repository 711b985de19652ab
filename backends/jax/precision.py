"""The precision policy in JAX (aebench.plugins.bench_api.Precision), set in one place."""

from __future__ import annotations

import jax

from aebench.plugins.bench_api import Precision

MATMUL_PRECISION = {False: "highest", True: "tensorfloat32"}


def layer_precision(precision: Precision) -> jax.lax.Precision:
    """The precision Flax layers are built with (model.py builds every layer with it)."""
    return jax.lax.Precision(MATMUL_PRECISION[precision.tf32])


def set_precision(precision: Precision) -> jax.lax.Precision:
    """JAX's default matmul precision for ``precision``; returns the matching layer precision."""
    jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[precision.tf32])
    return layer_precision(precision)
