"""The precision policy on Keras' engine (aebench.plugins.bench_api.Precision), set in one place.

``apply_precision`` is called once per process, right after the backend loads
(aebench.plugins.precision): TensorFlow's TF32 execution, JAX's default matmul precision or
torch's TF32 switches, whichever engine Keras was imported with. A build never sets them; it
only switches on JAX's x64 for a float64 spec (``allow_float64``, not a precision switch).
"""

from __future__ import annotations

from aebench.plugins.bench_api import Precision

from .engines import engine

TF_SWITCH = "tf.config.experimental.tensor_float_32_execution_enabled"
JAX_SWITCH = "jax_default_matmul_precision"
TORCH_MATMUL, TORCH_CUDNN, TORCH_LEVEL = (
    "torch.backends.cuda.matmul.allow_tf32",
    "torch.backends.cudnn.allow_tf32",
    "torch.float32_matmul_precision",
)


def apply_precision(precision: Precision) -> dict[str, str]:
    """TensorFloat-32 matmuls and convolutions on (tf32) or off (ieee-fp32) on Keras' engine;
    what the engine reports afterwards (read_precision)."""
    name = engine()
    if name == "tensorflow":
        import tensorflow as tf

        tf.config.experimental.enable_tensor_float_32_execution(precision.tf32)
    elif name == "jax":
        import jax

        jax.config.update(JAX_SWITCH, "tensorfloat32" if precision.tf32 else "highest")
    else:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = precision.tf32
        torch.backends.cudnn.allow_tf32 = precision.tf32
    return read_precision()


def read_precision() -> dict[str, str]:
    """The engine's precision switches as it reports them."""
    name = engine()
    if name == "tensorflow":
        import tensorflow as tf

        return {TF_SWITCH: str(tf.config.experimental.tensor_float_32_execution_enabled()).lower()}
    if name == "jax":
        import jax

        return {JAX_SWITCH: str(jax.config.jax_default_matmul_precision)}
    import torch

    return {
        TORCH_MATMUL: str(torch.backends.cuda.matmul.allow_tf32).lower(),
        TORCH_CUDNN: str(torch.backends.cudnn.allow_tf32).lower(),
        TORCH_LEVEL: torch.get_float32_matmul_precision(),
    }


def expected_switches(precision: Precision) -> dict[str, str]:
    """What read_precision reports once ``precision`` is applied."""
    on = str(precision.tf32).lower()
    name = engine()
    if name == "tensorflow":
        return {TF_SWITCH: on}
    if name == "jax":
        return {JAX_SWITCH: "tensorfloat32" if precision.tf32 else "highest"}
    return {TORCH_MATMUL: on, TORCH_CUDNN: on, TORCH_LEVEL: "high" if precision.tf32 else "highest"}


def allow_float64(dtype: str) -> None:
    """x64 on JAX for a float64 model or matmul (JAX computes float64 only with it); nothing on
    the other engines. Not a precision switch: it is never switched off."""
    if dtype == "float64" and engine() == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
