"""Training in JAX: one jit-compiled step (loss, gradients, update) with the reference Adam
(aebench.plugins.adam; host-side float64 scalars passed in as arguments) or optax.adam (stock).
make_step is the step itself, shared with the benchmark modes (bench.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aebench.plugins.adam import adam_scalars
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.types import Adam, Spec

from .losses import loss_terms
from .model import Autoencoder, Params


def reference_adam(
    opt: Adam,
    params: Params,
    grads: Params,
    m: Params,
    v: Params,
    step_size: jax.Array,
    bias_correction2_sqrt: jax.Array,
) -> tuple[Params, Params, Params]:
    """torch.optim.Adam's arithmetic, op for op (m by lerp, eps outside the square root)."""
    b1, b2, eps = opt.beta1, opt.beta2, opt.epsilon
    m = jax.tree.map(lambda m_, g: m_ + (1 - b1) * (g - m_), m, grads)
    v = jax.tree.map(lambda v_, g: v_ * b2 + (1 - b2) * (g * g), v, grads)
    params = jax.tree.map(
        lambda p, m_, v_: p + (-step_size) * (m_ / (jnp.sqrt(v_) / bias_correction2_sqrt + eps)), params, m, v
    )
    return params, m, v


def grad_fn(model: Autoencoder, spec: Spec):
    """(params, x, labels, eps, corruption) -> (terms, grads of the total)."""
    names = loss_term_names(spec)

    def total(params, x, labels, eps, corruption):
        terms = loss_terms(model, spec, params, x, labels, eps, corruption)
        return terms["total"], jnp.stack([terms[n] for n in names])

    def fn(params, x, labels, eps, corruption):
        (_, terms), grads = jax.value_and_grad(total, has_aux=True)(params, x, labels, eps, corruption)
        return terms, grads

    return fn


def make_step(model: Autoencoder, spec: Spec):
    """The training step shared by JaxTrainer and the benchmark modes (bench.py).

    Returns (init, step): ``init(params)`` is the optimizer state, and
    ``step(params, state, x, labels, eps, corruption, step_size, c2_sqrt) -> (params, state,
    terms)`` computes the loss terms (loss_term_names order), their gradients and one update
    with the spec's optimizer: the reference Adam with the given scalars of this step, or
    optax.adam (stock; the scalars are then ignored and may be None). Pure, so it can be
    jitted, scanned or run op by op.
    """
    gradients = grad_fn(model, spec)
    opt = spec.optimizer
    if opt.implementation == "stock":
        tx = optax.adam(opt.learning_rate, b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon)

        def stock_step(params, state, x, labels, eps, corruption, step_size=None, c2_sqrt=None):
            terms, grads = gradients(params, x, labels, eps, corruption)
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state, terms

        return tx.init, stock_step

    def init(params: Params):
        return jax.tree.map(jnp.zeros_like, params), jax.tree.map(jnp.zeros_like, params)

    def reference_step(params, state, x, labels, eps, corruption, step_size, c2_sqrt):
        terms, grads = gradients(params, x, labels, eps, corruption)
        params, m, v = reference_adam(opt, params, grads, *state, step_size, c2_sqrt)
        return params, (m, v), terms

    return init, reference_step


class JaxTrainer:
    """Keeps the training data on the device; each step is one jitted call."""

    def __init__(
        self,
        model: Autoencoder,
        spec: Spec,
        params: Params,
        x: np.ndarray,
        labels: Optional[np.ndarray],
        device: jax.Device,
        dtype: jnp.dtype,
        on_update,
    ):
        self.spec, self.dtype, self.device, self.on_update = spec, dtype, device, on_update
        self.x = jax.device_put(jnp.asarray(x, dtype=dtype), device)
        self.labels = None if labels is None else jax.device_put(jnp.asarray(labels, dtype=dtype), device)
        self.params, self.count = params, 0
        self.stock = spec.optimizer.implementation == "stock"
        init, step = make_step(model, spec)
        self.state = init(params)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def indexed_step(params, state, x_all, labels_all, idx, eps, corruption, step_size, c2_sqrt):
            labels = None if labels_all is None else labels_all[idx]
            return step(params, state, x_all[idx], labels, eps, corruption, step_size, c2_sqrt)

        self._step = indexed_step

    def _array(self, a: Optional[np.ndarray]) -> Optional[jax.Array]:
        return None if a is None else jax.device_put(jnp.asarray(a, dtype=self.dtype), self.device)

    def _adam_scalars(self) -> tuple:
        if self.stock:
            return None, None
        self.count += 1
        s = adam_scalars(self.spec.optimizer, self.count)
        return jnp.asarray(s.step_size, self.dtype), jnp.asarray(s.bias_correction2_sqrt, self.dtype)

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        rows = []
        for step in steps:
            idx = jax.device_put(jnp.asarray(step.indices, dtype=jnp.int32), self.device)
            self.params, self.state, terms = self._step(
                self.params,
                self.state,
                self.x,
                self.labels,
                idx,
                self._array(step.noise.eps),
                self._array(step.noise.corruption),
                *self._adam_scalars(),
            )
            self.on_update(self.params)  # the step donated the old buffers
            rows.append(terms)
        if not rows:
            return np.zeros((0, len(loss_term_names(self.spec))))
        return np.asarray(jnp.stack(rows), dtype=np.float64)
