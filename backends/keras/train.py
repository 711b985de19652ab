"""Training in Keras 3: the reference Adam in keras.ops on the variables, or
keras.optimizers.Adam (stock: its epsilon is 'epsilon hat', docs/EQUIVALENCE.md, 'Adam')."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import Optional

import keras
import numpy as np
from keras import ops

from aebench.plugins.adam import adam_scalars
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.types import Adam, Spec

from .engines import value_and_grad
from .losses import loss_terms
from .model import Autoencoder


class ReferenceAdam:
    """aebench's reference Adam (torch.optim.Adam's arithmetic) on Keras variables."""

    def __init__(self, variables: list, opt: Adam, dtype: str):
        self.variables, self.opt, self.dtype, self.count = variables, opt, dtype, 0
        self.m = [ops.zeros_like(v.value) for v in variables]
        self.v = [ops.zeros_like(v.value) for v in variables]

    def step(self, grads: list) -> None:
        self.count += 1
        s = adam_scalars(self.opt, self.count)
        step_size = ops.convert_to_tensor(s.step_size, dtype=self.dtype)
        c2_sqrt = ops.convert_to_tensor(s.bias_correction2_sqrt, dtype=self.dtype)
        for i, (variable, g) in enumerate(zip(self.variables, grads)):
            value, self.m[i], self.v[i] = reference_adam_update(
                self.opt, variable.value, self.m[i], self.v[i], g, step_size, c2_sqrt
            )
            variable.assign(value)


def reference_adam_update(opt: Adam, value, m, v, g, step_size, c2_sqrt) -> tuple:
    """One reference Adam update of one array in keras.ops: (new value, new m, new v).

    Pure, so the same arithmetic runs eagerly, in a tf.function, under jax.jit or
    torch.compile; step_size and c2_sqrt are this step's scalars (aebench.plugins.adam)."""
    b1, b2, eps = opt.beta1, opt.beta2, opt.epsilon
    m = m + (1 - b1) * (g - m)
    v = v * b2 + (1 - b2) * (g * g)
    denom = ops.sqrt(v) / c2_sqrt + eps
    return value + (-step_size) * (m / denom), m, v


class StockAdam:
    def __init__(self, variables: list, opt: Adam, dtype: str):
        self.variables = variables
        self.inner = keras.optimizers.Adam(
            learning_rate=opt.learning_rate, beta_1=opt.beta1, beta_2=opt.beta2, epsilon=opt.epsilon
        )
        self.inner.build(variables)

    def step(self, grads: list) -> None:
        self.inner.apply(grads, self.variables)


class KerasTrainer:
    """Keeps the training data as engine tensors; a step is loss, gradients, update."""

    def __init__(self, model: Autoencoder, spec: Spec, x: np.ndarray, labels: Optional[np.ndarray]):
        self.model, self.spec, self.dtype = model, spec, model.dtype
        self.x = ops.convert_to_tensor(np.asarray(x, dtype=self.dtype))
        self.labels = None if labels is None else ops.convert_to_tensor(np.asarray(labels, dtype=self.dtype))
        optimizer = ReferenceAdam if spec.optimizer.implementation == "reference" else StockAdam
        self.optimizer = optimizer(model.variables, spec.optimizer, self.dtype)
        self.names = loss_term_names(spec)

    def _tensor(self, a: Optional[np.ndarray]):
        return None if a is None else ops.convert_to_tensor(np.asarray(a, dtype=self.dtype))

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        rows = []
        for step in steps:
            idx = ops.convert_to_tensor(np.asarray(step.indices, dtype=np.int32))
            x = ops.take(self.x, idx, axis=0)
            labels = None if self.labels is None else ops.take(self.labels, idx, axis=0)
            eps, corruption = self._tensor(step.noise.eps), self._tensor(step.noise.corruption)
            terms, grads = value_and_grad(
                partial(loss_terms, self.model, self.spec, x, labels, eps, corruption), self.model.variables
            )
            self.optimizer.step(grads)
            rows.append([ops.convert_to_numpy(terms[n]) for n in self.names])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.names))
