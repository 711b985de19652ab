"""The JAX backend's benchmark modes (aebench.plugins.bench_api): the training step of train.make_step,
run op by op, jitted one step per call, or jitted as a lax.scan of several steps per call.

Everything the steps read is on the device before the first one: the training data, the
batch order, the noise and the reference Adam's scalars, indexed by a device int32 step
counter carried in the state with the parameters and the optimizer state, so a dispatch
copies nothing from the host. jax is imported only inside the functions.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from aebench.plugins.bench_api import MODE_NAMES, BenchData, Precision, require_mode, require_steps_per_call
from aebench.spec.types import Spec

MODES = {
    "eager": "JAX op-by-op mode (jax.disable_jit): every jnp op of the step dispatched separately; "
    "nobody trains this way",
    "compiled": "one jax.jit-compiled training step per call, parameters and optimizer state donated",
    "fast": "jax.jit of a lax.scan over steps_per_call training steps per call, state donated",
}
assert tuple(MODES) == MODE_NAMES


def unsupported(backend, mode: str) -> str:
    """Every mode runs wherever JAX runs."""
    require_mode(MODES, mode)
    return ""


def prepare(backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int):
    """A runner for ``mode``: model built and loaded, data on the device, at the process's
    precision (applied when the backend loaded; the layers are built at it). Nothing is
    compiled here, so the first dispatch includes the compilation."""
    require_mode(MODES, mode)
    require_steps_per_call(mode, steps_per_call)
    import jax

    model = backend.build(spec)
    backend.set_weights(model, data.weights)
    from .train import make_step

    init, step = make_step(model.net, spec, data.steps_per_epoch)
    device = jax.devices()[0]
    tables = _device_tables(data, device)
    state = (model.params, init(model.params), jax.device_put(np.int32(0), device))
    scanned = steps_per_call if mode == "fast" else 1
    return JaxStepRunner(_mode_function(mode, _indexed_step(step, tables), scanned), state, tables, scanned, device)


def _device_tables(data: BenchData, device) -> dict:
    """Every array of ``data`` the steps read, on the device once (None stays None)."""
    import jax

    def put(a: Optional[np.ndarray]):
        return None if a is None else jax.device_put(a, device)

    return {
        "x": put(data.x),
        "labels": put(data.labels),
        "order": put(data.order),
        "eps": put(data.eps),
        "corruption": put(data.corruption),
        "draws": {name: put(draw) for name, draw in data.draws.items()},
        "step_size": put(data.adam_step_size),
        "c2_sqrt": put(data.adam_bias_correction2_sqrt),
        "decay_factor": put(data.adam_decay_factor),
    }


def _indexed_step(step, tables: dict):
    """(state, tables) -> (state, total loss): training step k (the counter in the state) on
    batch k % n with the Adam scalars of step k + 1, all indexed on the device."""
    n = len(tables["order"])

    def indexed(state, t):
        params, opt_state, k = state
        b = k % n
        idx = t["order"][b]

        def batch(name):
            return None if t[name] is None else t[name][b]

        labels = None if t["labels"] is None else t["labels"][idx]
        params, opt_state, terms = step(
            params,
            opt_state,
            t["x"][idx],
            labels,
            batch("eps"),
            batch("corruption"),
            {name: draw[b] for name, draw in t["draws"].items()},
            t["step_size"][k],
            t["c2_sqrt"][k],
            t["decay_factor"][k],
        )
        return (params, opt_state, k + 1), terms[0]

    return indexed


def _mode_function(mode: str, indexed, steps_per_call: int):
    """(state, tables) -> (state, losses) as the mode runs it."""
    import jax

    if mode == "eager":

        def op_by_op(state, tables):
            with jax.disable_jit():
                return indexed(state, tables)

        return op_by_op
    if mode == "compiled":
        return jax.jit(indexed, donate_argnums=(0,))

    def scanned(state, tables):
        return jax.lax.scan(lambda s, _: indexed(s, tables), state, None, length=steps_per_call)

    return jax.jit(scanned, donate_argnums=(0,))


class JaxStepRunner:
    """aebench.plugins.bench_api.StepRunner: the state (params, optimizer state, step counter) stays on
    the device and is replaced by each dispatch (its old buffers are donated)."""

    def __init__(self, run, state, tables: dict, steps_per_call: int, device):
        self._run, self._state, self._tables, self._device = run, state, tables, device
        self.steps_per_call = steps_per_call

    def dispatch(self):
        self._state, losses = self._run(self._state, self._tables)
        return losses

    def wait(self, handle) -> None:
        import jax

        jax.block_until_ready((handle, self._state))

    def losses(self, handles: list) -> np.ndarray:
        return np.concatenate([np.asarray(h, dtype=np.float64).reshape(-1) for h in handles])

    def peak_memory_bytes(self) -> Optional[int]:
        """XLA's peak bytes in use on the device (GPU); JAX cannot reset it, but each cell runs
        in a fresh process. None on CPU, where XLA keeps no statistics."""
        stats = self._device.memory_stats()
        return None if stats is None else int(stats["peak_bytes_in_use"])


def thread_pools() -> dict[str, int]:
    """JAX exposes no thread pool sizes (XLA_FLAGS, recorded by the harness, sets them)."""
    return {}
