"""Training in JAX: one jit-compiled step (loss, gradients, update) with the reference Adam
(aebench.plugins.adam; host-side float64 scalars passed in as arguments) or Optax's own Adam
(stock: optax.adam, chained after add_decayed_weights for coupled decay, optax.adamw for
decoupled, with optax.exponential_decay as the schedule). make_step is the step itself, shared
with the benchmark modes (bench.py)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from aebench.plugins.adam import adam_scalars, coupled_decay, decoupled_decay, epoch_steps, schedule_period
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.shapes import ModelPlan
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
    decay_factor: jax.Array,
) -> tuple[Params, Params, Params]:
    """torch.optim.Adam's (decoupled: AdamW's) arithmetic, op for op (coupled decay added to the
    gradient, m by lerp, decoupled decay as a factor on p, eps outside the square root)."""
    b1, b2, eps, wd = opt.beta1, opt.beta2, opt.epsilon, coupled_decay(opt)
    if wd:
        grads = jax.tree.map(lambda g, p: g + wd * p, grads, params)
    if decoupled_decay(opt):
        params = jax.tree.map(lambda p: p * decay_factor, params)
    m = jax.tree.map(lambda m_, g: m_ + (1 - b1) * (g - m_), m, grads)
    v = jax.tree.map(lambda v_, g: v_ * b2 + (1 - b2) * (g * g), v, grads)
    params = jax.tree.map(
        lambda p, m_, v_: p + (-step_size) * (m_ / (jnp.sqrt(v_) / bias_correction2_sqrt + eps)), params, m, v
    )
    return params, m, v


def stock_adam(opt: Adam, steps_per_epoch: Optional[int]) -> optax.GradientTransformation:
    """Optax's own Adam for the spec: optax.adam, preceded by add_decayed_weights (coupled decay,
    the L2 gradient) or optax.adamw (decoupled); a schedule is optax.exponential_decay with
    staircase=True and one transition per period (its default, staircase=False, decays every step)."""
    learning_rate: optax.ScalarOrSchedule = opt.learning_rate
    if opt.schedule is not None:
        learning_rate = optax.exponential_decay(
            opt.learning_rate,
            transition_steps=schedule_period(opt, steps_per_epoch),
            decay_rate=opt.schedule.gamma,
            staircase=True,
        )
    hyper = dict(b1=opt.beta1, b2=opt.beta2, eps=opt.epsilon)
    if decoupled_decay(opt):
        return optax.adamw(learning_rate, weight_decay=decoupled_decay(opt), **hyper)
    if coupled_decay(opt):
        return optax.chain(optax.add_decayed_weights(coupled_decay(opt)), optax.adam(learning_rate, **hyper))
    return optax.adam(learning_rate, **hyper)


def split(plan: ModelPlan, params: Params) -> tuple[Params, Params]:
    """(trainable, state): the parameter tree parted into what the optimizer updates and the
    running statistics (Flax's ``params`` and ``batch_stats`` collections)."""
    state_names = {p.name for p in plan.state}
    trainable: Params = {}
    state: Params = {}
    for layer, roles in params.items():
        for role, value in roles.items():
            (state if f"{layer}.{role}" in state_names else trainable).setdefault(layer, {})[role] = value
    return trainable, state


def merge(*trees: Params) -> Params:
    """One parameter tree from several; later trees win."""
    out: Params = {}
    for tree in trees:
        for layer, roles in tree.items():
            out[layer] = {**out.get(layer, {}), **roles}
    return out


def grad_fn(model: Autoencoder, spec: Spec):
    """(params, x, labels, eps, corruption, draws) -> (terms, grads of the total over the
    trainable parameters, the state after this training-mode pass)."""
    names = loss_term_names(spec)

    def total(trainable, state, x, labels, eps, corruption, draws):
        updates: Params = {}
        terms = loss_terms(model, spec, merge(trainable, state), x, labels, eps, corruption, draws, updates)
        return terms["total"], (jnp.stack([terms[n] for n in names]), merge(state, updates))

    def fn(params, x, labels, eps, corruption, draws):
        trainable, state = split(model.plan, params)
        (_, (terms, state)), grads = jax.value_and_grad(total, has_aux=True)(
            trainable, state, x, labels, eps, corruption, draws
        )
        return terms, grads, state

    return fn


def make_step(model: Autoencoder, spec: Spec, steps_per_epoch: Optional[int] = None):
    """The training step shared by JaxTrainer and the benchmark modes (bench.py).

    Returns (init, step): ``init(params)`` is the optimizer state (over the trainable
    parameters), and
    ``step(params, state, x, labels, eps, corruption, draws, step_size, c2_sqrt, decay_factor)
    -> (params, state, terms)`` (``draws``: the layers' injected draws, a dict by layer name)
    computes the loss terms (loss_term_names order), their gradients and one update with the
    spec's optimizer (the returned params carry the state, running statistics, of this step's
    training-mode pass): the reference Adam with the given scalars of this step, or Optax's
    (stock_adam, whose schedule counts ``steps_per_epoch`` updates an epoch; the scalars are
    then ignored and may be None). Pure, so it can be jitted, scanned or run op by op.
    """
    gradients = grad_fn(model, spec)
    opt = spec.optimizer
    if opt.implementation == "stock":
        tx = stock_adam(opt, steps_per_epoch)

        def stock_step(
            params, state, x, labels, eps, corruption, draws, step_size=None, c2_sqrt=None, decay_factor=None
        ):
            terms, grads, stats = gradients(params, x, labels, eps, corruption, draws)
            trainable = split(model.plan, params)[0]
            updates, state = tx.update(grads, state, trainable)
            return merge(optax.apply_updates(trainable, updates), stats), state, terms

        return lambda params: tx.init(split(model.plan, params)[0]), stock_step

    def init(params: Params):
        trainable = split(model.plan, params)[0]
        return jax.tree.map(jnp.zeros_like, trainable), jax.tree.map(jnp.zeros_like, trainable)

    def reference_step(params, state, x, labels, eps, corruption, draws, step_size, c2_sqrt, decay_factor):
        terms, grads, stats = gradients(params, x, labels, eps, corruption, draws)
        trainable = split(model.plan, params)[0]
        trainable, m, v = reference_adam(opt, trainable, grads, *state, step_size, c2_sqrt, decay_factor)
        return merge(trainable, stats), (m, v), terms

    return init, reference_step


class JaxTrainer:
    """Keeps the training data on the device; each step is one jitted call. ``steps_per_epoch``
    (default: the training loop's epoch of x) paces a per-epoch schedule."""

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
        steps_per_epoch: Optional[int] = None,
    ):
        self.spec, self.dtype, self.device, self.on_update = spec, dtype, device, on_update
        self.x = jax.device_put(jnp.asarray(x, dtype=dtype), device)
        self.labels = None if labels is None else jax.device_put(jnp.asarray(labels, dtype=dtype), device)
        self.params = params
        self.stock = spec.optimizer.implementation == "stock"
        period = steps_per_epoch or epoch_steps(len(x), spec.train.batch_size)
        self.scalars = adam_scalars(spec.optimizer, period)
        init, step = make_step(model, spec, period)
        self.state = init(params)

        @functools.partial(jax.jit, donate_argnums=(0, 1))
        def indexed_step(
            params, state, x_all, labels_all, idx, eps, corruption, draws, step_size, c2_sqrt, decay_factor
        ):
            labels = None if labels_all is None else labels_all[idx]
            return step(params, state, x_all[idx], labels, eps, corruption, draws, step_size, c2_sqrt, decay_factor)

        self._step = indexed_step

    def _array(self, a: Optional[np.ndarray]) -> Optional[jax.Array]:
        return None if a is None else jax.device_put(jnp.asarray(a, dtype=self.dtype), self.device)

    def _adam_scalars(self) -> tuple:
        if self.stock:
            return None, None, None
        s = next(self.scalars)
        return tuple(jnp.asarray(a, self.dtype) for a in (s.step_size, s.bias_correction2_sqrt, s.decay_factor))

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
                {name: self._array(draw) for name, draw in step.noise.draws.items()},
                *self._adam_scalars(),
            )
            self.on_update(self.params)  # the step donated the old buffers
            rows.append(terms)
        if not rows:
            return np.zeros((0, len(loss_term_names(self.spec))))
        return np.asarray(jnp.stack(rows), dtype=np.float64)
