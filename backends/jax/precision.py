"""The precision policy in JAX (aebench.plugins.bench_api.Precision), set in one place.

``apply_precision`` is called once per process, right after the backend loads
(aebench.plugins.precision): it sets ``jax_default_matmul_precision``, which every matmul and
convolution without a precision of its own follows (the losses' contractions), and the Flax
layers are built with that same level (``applied_level``), read when a model is built.
"""

from __future__ import annotations

from typing import Optional

import jax

from aebench.plugins.bench_api import Precision

MATMUL_PRECISION = {"ieee-fp32": "highest", "tf32": "tensorfloat32"}
SWITCH = "jax_default_matmul_precision"


def apply_precision(precision: Precision) -> dict[str, str]:
    """JAX's default matmul precision for ``precision``; what JAX reports afterwards."""
    jax.config.update(SWITCH, MATMUL_PRECISION[precision.name])
    return read_precision()


def read_precision() -> dict[str, str]:
    """``jax_default_matmul_precision`` as JAX reports it ('None' where nothing set it:
    JAX's DEFAULT, TF32 on Ampere and later GPUs)."""
    return {SWITCH: str(jax.config.jax_default_matmul_precision)}


def expected_switches(precision: Precision) -> dict[str, str]:
    """What read_precision reports once ``precision`` is applied."""
    return {SWITCH: MATMUL_PRECISION[precision.name]}


def applied_level() -> Optional[jax.lax.Precision]:
    """The precision Flax layers are built with: the level apply_precision set (None, JAX's
    default, where nothing set it)."""
    level = jax.config.jax_default_matmul_precision
    return None if level is None else jax.lax.Precision(level)


def allow_float64(dtype: str) -> None:
    """x64 on for a float64 model or matmul (JAX computes float64 only with it; float32 arrays
    keep explicit float32 dtypes either way). Not a precision switch: it is never switched off."""
    if dtype == "float64":
        jax.config.update("jax_enable_x64", True)
