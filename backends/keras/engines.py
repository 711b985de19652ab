"""What Keras 3 leaves to its engine: gradients, the engine's versions and its device name.
(The precision switches, TF32 and JAX's x64, are in precision.py.)

``value_and_grad(fn, variables, state)`` runs ``fn()`` (which reads the variables) and returns
its result dict and the gradient of its 'total' with respect to each variable, on the engine
Keras was imported with: a GradientTape on TensorFlow, jax.value_and_grad through a
keras.StatelessScope on JAX, torch.autograd.grad on torch. The ``state`` variables (running
statistics) that ``fn`` assigns hold the assigned values afterwards on every engine: TensorFlow
and torch assign in place; on JAX the scope collects the assignments and they are copied out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import keras


def engine() -> str:
    return keras.backend.backend()


def value_and_grad(fn: Callable[[], dict], variables: list, state: Sequence = ()) -> tuple[dict, list]:
    if engine() == "jax":
        return _jax(fn, variables, state)
    return {"tensorflow": _tensorflow, "torch": _torch}[engine()](fn, variables)


StepGradients = Callable[..., tuple[dict, list]]
"""(*inputs) -> (terms, gradients of 'total'): step_value_and_grad."""


def step_value_and_grad(fn: Callable[..., dict], variables: list, state: Sequence = ()) -> StepGradients:
    """A training step's gradients: ``(*inputs) -> value_and_grad(lambda: fn(*inputs), variables,
    state)``. On JAX the step is traced once per input shapes under jax.jit, as Keras' own
    ``fit`` compiles it there; on TensorFlow and torch it runs eagerly."""
    if engine() != "jax":
        return lambda *inputs: value_and_grad(partial(fn, *inputs), variables, state)
    import jax

    def pure(values, state_values, *inputs):
        return stateful_value_and_grad(partial(fn, *inputs), variables, values, state, state_values)

    jitted = jax.jit(pure)

    def run(*inputs):
        terms, grads, new_state = jitted([v.value for v in variables], [v.value for v in state], *inputs)
        _copy_out(state, new_state)
        return terms, grads

    return run


def _tensorflow(fn, variables):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        terms = fn()
    return terms, tape.gradient(terms["total"], [v.value for v in variables])


def _jax(fn, variables, state):
    terms, grads, new_state = stateful_value_and_grad(
        fn, variables, [v.value for v in variables], state, [v.value for v in state]
    )
    _copy_out(state, new_state)
    return terms, grads


def _copy_out(state: Sequence, values: Sequence) -> None:
    """The state variables take the values a stateless JAX step computed for them."""
    for variable, value in zip(state, values):
        variable.assign(value)


def stateful_value_and_grad(
    fn: Callable[[], dict], variables: list, values: list, state: Sequence = (), state_values: Sequence = ()
) -> tuple[dict, list, list]:
    """JAX: ``fn()``'s terms, the gradient of its 'total' with respect to ``values``, which
    stand in for ``variables`` (keras.StatelessScope), so it traces under jax.jit and lax.scan,
    and the values of the non-trainable ``state`` variables (standing in as ``state_values``)
    after ``fn``: what it assigned them, else unchanged."""
    import jax

    def total(values):
        mapping = list(zip(variables, values)) + list(zip(state, state_values))
        with keras.StatelessScope(state_mapping=mapping) as scope:
            terms = fn()
            new_state = [scope.get_current_value(v) for v in state]
        return terms["total"], (terms, new_state)

    (_, (terms, new_state)), grads = jax.value_and_grad(total, has_aux=True)(values)
    return terms, grads, new_state


def _torch(fn, variables):
    import torch

    terms = fn()
    grads = torch.autograd.grad(terms["total"], [v.value for v in variables])
    return {k: v.detach() for k, v in terms.items()}, list(grads)


def versions() -> dict[str, str]:
    out = {"keras": keras.__version__, "keras_engine": engine()}
    module = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[engine()]
    out[module] = __import__(module).__version__
    return out


def device_name() -> str:
    name = engine()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return f"{gpus[0].name}" if gpus else "cpu"
    if name == "jax":
        import jax

        d = jax.devices()[0]
        return d.platform if d.platform == "cpu" else f"{d.platform}:{d.id} ({d.device_kind})"
    import torch

    return f"cuda:0 ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
