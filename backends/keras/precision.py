"""The precision policy on Keras' engine (aebench.plugins.bench_api.Precision), set in one place."""

from __future__ import annotations

from aebench.plugins.bench_api import Precision

from .engines import engine


def set_precision(precision: Precision, float64: bool = False) -> None:
    """TensorFloat-32 matmuls and convolutions on (precision.tf32) or off on Keras' engine;
    x64 on JAX for float64 specs (JAX computes float64 only with it)."""
    name = engine()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(precision.tf32)
    elif name == "jax":
        import jax

        jax.config.update("jax_default_matmul_precision", "tensorfloat32" if precision.tf32 else "highest")
        if float64:
            jax.config.update("jax_enable_x64", True)
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = precision.tf32
        torch.backends.cudnn.allow_tf32 = precision.tf32
