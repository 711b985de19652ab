"""The Keras benchmark runners (bench.py's work once Keras may be imported), one per engine.

TensorFlow: a GradientTape step, tf.function(jit_compile=True), or a tf.range loop of
steps_per_call steps in one XLA function. JAX: keras.StatelessScope under disable_jit,
jax.jit with state donated, or jax.jit of lax.scan. torch: autograd op by op, or
torch.compile of the loss and of the Adam update.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import numpy as np

from aebench.plugins.bench_api import BenchData, Precision
from aebench.spec.types import Spec

from . import engines


def make_runner(backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int):
    """The model built and loaded, and the engine's runner for ``mode``, at the process's
    precision (``precision`` names it: it was applied when the backend loaded)."""
    model = backend.build(spec)
    backend.set_weights(model, data.weights)
    make = {"tensorflow": _tensorflow_runner, "jax": _jax_runner, "torch": _torch_runner}[engines.engine()]
    return make(model, spec, mode, data, steps_per_call)


class KerasStepRunner:
    """A StepRunner (aebench.plugins.bench_api) from an engine's functions; ``dispatch`` is the engine's
    own function, bound as an attribute so a call adds no Python layer of ours."""

    def __init__(
        self,
        dispatch: Callable[[], object],
        wait: Callable[[object], None],
        peak: Callable[[], Optional[int]],
        steps_per_call: int,
    ):
        self.dispatch, self._wait, self._peak, self.steps_per_call = dispatch, wait, peak, steps_per_call

    def wait(self, handle: object) -> None:
        self._wait(handle)

    def losses(self, handles: list) -> np.ndarray:
        from keras import ops

        return np.concatenate([np.ravel(ops.convert_to_numpy(h)) for h in handles]).astype(np.float64)

    def peak_memory_bytes(self) -> Optional[int]:
        return self._peak()


class DeviceData:
    """BenchData's arrays as engine tensors, uploaded once; ``batch(k)`` picks step k's inputs
    on the device from a device integer k."""

    def __init__(self, data: BenchData, dtype: str, index_dtype=np.int32):
        from keras import ops

        def put(a: Optional[np.ndarray], as_type=dtype):
            return None if a is None else ops.convert_to_tensor(np.asarray(a, dtype=as_type))

        self.x, self.labels, self.eps, self.corruption = (
            put(data.x),
            put(data.labels),
            put(data.eps),
            put(data.corruption),
        )
        self.draws = {name: put(draw) for name, draw in data.draws.items()}
        self.order = put(data.order, index_dtype)
        self.step_size, self.c2_sqrt = put(data.adam_step_size), put(data.adam_bias_correction2_sqrt)
        self.decay_factor = put(data.adam_decay_factor)
        self.steps_per_epoch = data.steps_per_epoch
        self.n = len(data.order)

    def batch(self, k) -> tuple:
        """(x, labels, eps, corruption, the layers' draws) of step k: batch k mod n."""
        from keras import ops

        i = k % self.n
        idx = ops.take(self.order, i, axis=0)

        def pick(a, at):
            return None if a is None else ops.take(a, at, axis=0)

        draws = {name: pick(draw, i) for name, draw in self.draws.items()}
        return pick(self.x, idx), pick(self.labels, idx), pick(self.eps, i), pick(self.corruption, i), draws

    def adam_scalars(self, k) -> tuple:
        """The reference Adam's (step_size, c2_sqrt, decay_factor) of step k (0-based)."""
        from keras import ops

        return ops.take(self.step_size, k), ops.take(self.c2_sqrt, k), ops.take(self.decay_factor, k)


def _terms_fn(model, spec: Spec) -> Callable:
    """(x, labels, eps, corruption, draws) -> the loss terms of the trainer (losses.loss_terms)."""
    from .losses import loss_terms

    return lambda x, labels, eps, corruption, draws: loss_terms(model, spec, x, labels, eps, corruption, draws)


def _adam_updates(spec: Spec, values: list, ms: list, vs: list, grads: list, step_size, c2_sqrt, decay_factor) -> tuple:
    """The reference Adam over every variable: (new values, new ms, new vs)."""
    from .train import reference_adam_update

    out = [
        reference_adam_update(spec.optimizer, p, m, v, g, step_size, c2_sqrt, decay_factor)
        for p, m, v, g in zip(values, ms, vs, grads)
    ]
    return [o[0] for o in out], [o[1] for o in out], [o[2] for o in out]


def _stock_adam(model, spec: Spec, dev: DeviceData):
    """Keras' Adam built on the model's variables, as the trainer's StockAdam builds it (its
    schedule counts ``dev.steps_per_epoch`` updates an epoch)."""
    from .train import StockAdam

    return StockAdam(model.variables, spec.optimizer, model.dtype, dev.steps_per_epoch)


# TensorFlow: the step updates Keras/tf variables in place and reads a tf.Variable step counter.


def _tensorflow_runner(model, spec: Spec, mode: str, data: BenchData, steps_per_call: int) -> KerasStepRunner:
    import tensorflow as tf

    from .engines import value_and_grad

    dev = DeviceData(data, model.dtype, np.int64)  # int64: TF keeps int32 tensors in host memory
    step = _tensorflow_step(model, spec, dev, value_and_grad)
    if mode == "eager":
        dispatch = step
    elif mode == "compiled":
        dispatch = tf.function(step, jit_compile=True)
    else:
        dispatch = tf.function(_tensorflow_loop(step, steps_per_call, model.dtype), jit_compile=True)
    gpu = bool(tf.config.list_logical_devices("GPU"))
    if gpu:
        tf.config.experimental.reset_memory_stats("GPU:0")
    sync = getattr(tf.test.experimental, "sync_devices", None)
    return KerasStepRunner(
        dispatch,
        wait=lambda handle: _tf_wait(handle, sync),
        peak=(lambda: tf.config.experimental.get_memory_info("GPU:0")["peak"]) if gpu else (lambda: None),
        steps_per_call=steps_per_call,
    )


def _tf_wait(handle, sync) -> None:
    """sync_devices() alone returns before XLA:CPU has run the dispatched steps (measured: a
    3.5x too short step time); reading the last loss waits for its step, which reads the
    variables every earlier step wrote."""
    if sync is not None:
        sync()
    handle.numpy()


def _tensorflow_step(model, spec: Spec, dev: DeviceData, value_and_grad) -> Callable[[], object]:
    import tensorflow as tf

    terms_of = _terms_fn(model, spec)
    variables = model.variables
    counter = tf.Variable(0, dtype=tf.int64, trainable=False)
    if spec.optimizer.implementation == "reference":
        ms = [tf.Variable(tf.zeros_like(v.value), trainable=False) for v in variables]
        vs = [tf.Variable(tf.zeros_like(v.value), trainable=False) for v in variables]

        def update(grads, k):
            values, new_ms, new_vs = _adam_updates(
                spec, [v.value for v in variables], ms, vs, grads, *dev.adam_scalars(k)
            )
            for targets, news in ((ms, new_ms), (vs, new_vs), (variables, values)):
                for target, new in zip(targets, news):
                    target.assign(new)
    else:
        optimizer = _stock_adam(model, spec, dev)

        def update(grads, k):
            optimizer.step(grads)

    def step():
        k = counter.read_value()
        batch = dev.batch(k)
        terms, grads = value_and_grad(lambda: terms_of(*batch), variables)
        update(grads, k)
        counter.assign_add(1)
        return terms["total"]

    return step


def _tensorflow_loop(step: Callable, steps_per_call: int, dtype: str) -> Callable[[], object]:
    """``steps_per_call`` steps in a tf.range loop (what Keras' steps_per_execution runs); their
    total losses gathered in a TensorArray."""
    import tensorflow as tf

    def loop():
        totals = tf.TensorArray(dtype, size=steps_per_call)
        for i in tf.range(steps_per_call):
            totals = totals.write(i, step())
        return totals.stack()

    return loop


# JAX: a stateless step (parameters, running statistics, optimizer state, step counter) -> (state, total loss).


def _jax_runner(model, spec: Spec, mode: str, data: BenchData, steps_per_call: int) -> KerasStepRunner:
    import jax
    import jax.numpy as jnp

    dev = DeviceData(data, model.dtype)
    step, opt_state = _jax_step(model, spec, dev)
    values, stats = [v.value for v in model.variables], [v.value for v in model.state]
    state = {"now": (values, stats, opt_state, jnp.zeros((), jnp.int32))}
    if mode == "eager":

        def one(s):
            with jax.disable_jit():
                return step(s)
    elif mode == "compiled":
        one = jax.jit(step, donate_argnums=0)
    else:
        one = jax.jit(lambda s: jax.lax.scan(lambda c, _: step(c), s, length=steps_per_call), donate_argnums=0)

    def dispatch():
        state["now"], total = one(state["now"])
        return total

    device = jax.devices()[0]

    def peak() -> Optional[int]:
        stats = device.memory_stats() if device.platform != "cpu" else None
        return None if not stats else stats.get("peak_bytes_in_use")

    return KerasStepRunner(
        dispatch,
        wait=lambda handle: jax.block_until_ready((handle, state["now"])),  # eager: updates run after the loss
        peak=peak,
        steps_per_call=steps_per_call,
    )


def _jax_step(model, spec: Spec, dev: DeviceData) -> tuple[Callable, object]:
    """The step function and its initial optimizer state."""
    from keras import ops

    from .engines import stateful_value_and_grad

    terms_of = _terms_fn(model, spec)
    variables = model.variables
    if spec.optimizer.implementation == "reference":
        opt_state = ([ops.zeros_like(v.value) for v in variables], [ops.zeros_like(v.value) for v in variables])

        def update(values, opt_state, grads, k):
            values, ms, vs = _adam_updates(spec, values, *opt_state, grads, *dev.adam_scalars(k))
            return values, (ms, vs)
    else:
        optimizer = _stock_adam(model, spec, dev)
        opt_state = [v.value for v in optimizer.inner.variables]  # type: ignore[assignment]  # stock Adam's own layout

        def update(values, opt_state, grads, k):
            return optimizer.inner.stateless_apply(opt_state, optimizer.gradients(grads, values), values)

    def step(state):
        values, stats, opt_state, k = state
        batch = dev.batch(k)
        terms, grads, stats = stateful_value_and_grad(lambda: terms_of(*batch), variables, values, model.state, stats)
        values, opt_state = update(values, opt_state, grads, k)
        return (values, stats, opt_state, k + 1), terms["total"]

    return step, opt_state


# torch: the step updates the Keras variables' torch parameters in place.


def _torch_runner(model, spec: Spec, mode: str, data: BenchData, steps_per_call: int) -> KerasStepRunner:
    import torch

    from .engines import value_and_grad

    dev = DeviceData(data, model.dtype)
    terms_of = _terms_fn(model, spec)
    if mode == "compiled":
        # Dynamo caches by code object: a runner prepared earlier in this process would count towards
        # its recompile limit (past it, torch runs the step eagerly without saying so in the results).
        torch._dynamo.reset()
    compile_ = torch.compile if mode == "compiled" else (lambda fn: fn)
    batch_terms = compile_(lambda k: terms_of(*dev.batch(k)))
    update = _torch_update(model, spec, dev, compile_)
    variables = model.variables
    k = torch.zeros((), dtype=torch.int64, device=dev.x.device)

    def dispatch():
        terms, grads = value_and_grad(lambda: batch_terms(k), variables)
        update(grads, k)
        k.add_(1)
        return terms["total"]

    cuda = dev.x.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    return KerasStepRunner(
        dispatch,
        wait=(lambda handle: torch.cuda.synchronize()) if cuda else (lambda handle: None),  # CPU ops are synchronous
        peak=torch.cuda.max_memory_allocated if cuda else (lambda: None),
        steps_per_call=steps_per_call,
    )


def _torch_update(model, spec: Spec, dev: DeviceData, compile_: Callable) -> Callable:
    """(grads, k) -> None: the spec's Adam, updating the variables in place."""
    import torch

    variables = model.variables
    if spec.optimizer.implementation == "stock":
        optimizer = _stock_adam(model, spec, dev)
        return lambda grads, k: optimizer.step(grads)
    params = [v.value for v in variables]
    moments = {"m": [torch.zeros_like(p) for p in params], "v": [torch.zeros_like(p) for p in params]}
    adam = compile_(lambda values, ms, vs, grads, k: _adam_updates(spec, values, ms, vs, grads, *dev.adam_scalars(k)))

    def update(grads, k):
        with torch.no_grad():
            values, moments["m"], moments["v"] = adam(params, moments["m"], moments["v"], grads, k)
            torch._foreach_copy_(params, values)

    return update
