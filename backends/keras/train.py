"""Training in Keras 3: the reference Adam in keras.ops on the variables, or
keras.optimizers.Adam / AdamW with an ExponentialDecay schedule (stock: its epsilon is
'epsilon hat', docs/EQUIVALENCE.md, 'Adam')."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Optional

import keras
import numpy as np
from keras import ops

from aebench.plugins.adam import adam_scalars, coupled_decay, decoupled_decay, epoch_steps, schedule_period
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.types import Adam, Spec

from .engines import step_value_and_grad
from .losses import loss_terms
from .model import Autoencoder


class ReferenceAdam:
    """aebench's reference Adam (torch.optim.Adam's arithmetic) on Keras variables."""

    def __init__(self, variables: list, opt: Adam, dtype: str, steps_per_epoch: Optional[int] = None):
        self.variables, self.opt, self.dtype = variables, opt, dtype
        self.scalars = adam_scalars(opt, steps_per_epoch)
        self.m = [ops.zeros_like(v.value) for v in variables]
        self.v = [ops.zeros_like(v.value) for v in variables]

    def step(self, grads: list) -> None:
        s = next(self.scalars)
        step_size, c2_sqrt, decay_factor = (
            ops.convert_to_tensor(a, dtype=self.dtype) for a in (s.step_size, s.bias_correction2_sqrt, s.decay_factor)
        )
        for i, (variable, g) in enumerate(zip(self.variables, grads)):
            value, self.m[i], self.v[i] = reference_adam_update(
                self.opt, variable.value, self.m[i], self.v[i], g, step_size, c2_sqrt, decay_factor
            )
            variable.assign(value)


def reference_adam_update(opt: Adam, value, m, v, g, step_size, c2_sqrt, decay_factor) -> tuple:
    """One reference Adam update of one array in keras.ops: (new value, new m, new v).

    Pure, so the same arithmetic runs eagerly, in a tf.function, under jax.jit or
    torch.compile; step_size, c2_sqrt and decay_factor are this step's scalars
    (aebench.plugins.adam); coupled decay is added to g, decoupled decay multiplies value."""
    b1, b2, eps, wd = opt.beta1, opt.beta2, opt.epsilon, coupled_decay(opt)
    if wd:
        g = g + wd * value
    if decoupled_decay(opt):
        value = value * decay_factor
    m = m + (1 - b1) * (g - m)
    v = v * b2 + (1 - b2) * (g * g)
    denom = ops.sqrt(v) / c2_sqrt + eps
    return value + (-step_size) * (m / denom), m, v


def stock_learning_rate(opt: Adam, steps_per_epoch: Optional[int]):
    """The learning rate, or Keras' ExponentialDecay with staircase=True and one decay per
    period (its default, staircase=False, decays a little every step)."""
    if opt.schedule is None:
        return opt.learning_rate
    return keras.optimizers.schedules.ExponentialDecay(
        opt.learning_rate,
        decay_steps=schedule_period(opt, steps_per_epoch),
        decay_rate=opt.schedule.gamma,
        staircase=True,
    )


class StockAdam:
    """Keras' own Adam: keras.optimizers.AdamW for decoupled decay; for coupled decay,
    keras.optimizers.Adam with the L2 gradient added by hand (``gradients``), because Keras'
    ``Adam(weight_decay=)`` is decoupled."""

    def __init__(self, variables: list, opt: Adam, dtype: str, steps_per_epoch: Optional[int] = None):
        self.variables, self.coupled = variables, coupled_decay(opt)
        hyper = dict(
            learning_rate=stock_learning_rate(opt, steps_per_epoch),
            beta_1=opt.beta1,
            beta_2=opt.beta2,
            epsilon=opt.epsilon,
        )
        if decoupled_decay(opt):
            self.inner = keras.optimizers.AdamW(weight_decay=decoupled_decay(opt), **hyper)
        else:
            self.inner = keras.optimizers.Adam(**hyper)
        self.inner.build(variables)

    def gradients(self, grads: list, values: list) -> list:
        """The gradients Keras' optimizer is given: with coupled decay, g + coefficient * value."""
        if not self.coupled:
            return grads
        return [g + self.coupled * value for g, value in zip(grads, values)]

    def step(self, grads: list) -> None:
        self.inner.apply(self.gradients(grads, [v.value for v in self.variables]), self.variables)


class KerasTrainer:
    """Keeps the training data as engine tensors; a step is loss, gradients, update.
    ``steps_per_epoch`` (default: the training loop's epoch of x) paces a per-epoch schedule."""

    def __init__(
        self,
        model: Autoencoder,
        spec: Spec,
        x: np.ndarray,
        labels: Optional[np.ndarray],
        steps_per_epoch: Optional[int] = None,
    ):
        self.model, self.spec, self.dtype = model, spec, model.dtype
        self.x = ops.convert_to_tensor(np.asarray(x, dtype=self.dtype))
        self.labels = None if labels is None else ops.convert_to_tensor(np.asarray(labels, dtype=self.dtype))
        optimizer = ReferenceAdam if spec.optimizer.implementation == "reference" else StockAdam
        period = steps_per_epoch or epoch_steps(len(x), spec.train.batch_size)
        self.optimizer = optimizer(model.variables, spec.optimizer, self.dtype, period)
        self.names = loss_term_names(spec)
        # the running statistics are the step's state: updated by it
        self.value_and_grad = step_value_and_grad(partial(loss_terms, model, spec), model.variables, model.state)

    def _tensor(self, a: Optional[np.ndarray]):
        return None if a is None else ops.convert_to_tensor(np.asarray(a, dtype=self.dtype))

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        rows = []
        for step in steps:
            idx = ops.convert_to_tensor(np.asarray(step.indices, dtype=np.int32))
            x = ops.take(self.x, idx, axis=0)
            labels = None if self.labels is None else ops.take(self.labels, idx, axis=0)
            eps, corruption = self._tensor(step.noise.eps), self._tensor(step.noise.corruption)
            draws = {name: self._tensor(draw) for name, draw in step.noise.draws.items()}
            terms, grads = self.value_and_grad(x, labels, eps, corruption, draws)
            self.optimizer.step(grads)
            rows.append([ops.convert_to_numpy(terms[n]) for n in self.names])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.names))
