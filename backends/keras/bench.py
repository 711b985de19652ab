"""The Keras 3 backends' benchmark modes (aebench.plugins.bench_api), on the engine Keras was imported
with: TensorFlow (backend 'keras'), JAX ('keras-jax') or torch ('keras-torch').

Every mode computes the trainer's step (train.py): losses.loss_terms, the engine's gradient
(engines.py) and the reference Adam's arithmetic (train.reference_adam_update), or Keras'
own Adam for stock specs. Everything a step reads is on the device before the first one:
the training data, the batch order, the noise and the reference Adam's scalars, indexed by
a device step counter, so a dispatch copies nothing from the host. Keras and its engine are
imported only inside the functions, so the harness can read MODES without them.
"""

from __future__ import annotations

import sys

from aebench.errors import AebenchError
from aebench.plugins.bench_api import MODE_NAMES, BenchData, Precision, StepRunner, require_mode, require_steps_per_call
from aebench.spec.types import Spec

MODES = {
    "eager": "one step per call, op by op: a GradientTape step (TensorFlow), jax.disable_jit with "
    "keras.StatelessScope (JAX), torch autograd (torch)",
    "compiled": "one compiled step per call: tf.function(jit_compile=True) (TensorFlow), jax.jit with state "
    "donated (JAX), torch.compile of the loss and of the Adam update (torch)",
    "fast": "steps_per_call steps per call in one compiled loop: a tf.range loop in "
    "tf.function(jit_compile=True) as Keras' steps_per_execution (TensorFlow), jax.jit of lax.scan "
    "(JAX); none on torch",
}
assert tuple(MODES) == MODE_NAMES


def unsupported(backend, mode: str) -> str:
    """Why ``mode`` cannot run on the loaded Keras backend ("" if it can)."""
    require_mode(MODES, mode)
    if backend.name == "keras-torch" and mode == "fast":
        import torch

        if not torch.cuda.is_available():
            return "CUDA graphs need a CUDA device"
        return (
            "not implemented: CUDA-graph capture of a whole Keras-on-torch step was never run (developed without a GPU)"
        )
    return ""


def prepare(backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int) -> StepRunner:
    """A runner for ``mode``: model built and loaded, data on the device, at the process's
    precision (applied when the backend loaded). Nothing runs or compiles here, so the first
    dispatch includes the compilation."""
    reason = unsupported(backend, mode)
    if reason:
        raise AebenchError(f"mode '{mode}' cannot run on {backend.name}: {reason}")
    require_steps_per_call(mode, steps_per_call)
    from .bench_runners import make_runner

    return make_runner(backend, spec, mode, data, precision, steps_per_call if mode == "fast" else 1)


def thread_pools() -> dict[str, int]:
    """TensorFlow's intra- and inter-op thread pools, if it is loaded in this process (the
    JAX and torch engines' pools are their frameworks', reported by those backends)."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return {}
    threads = tf.config.threading
    return {
        "tensorflow.intra_op": threads.get_intra_op_parallelism_threads(),
        "tensorflow.inter_op": threads.get_inter_op_parallelism_threads(),
    }
