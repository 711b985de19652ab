"""The Keras 3 backend (aebench.plugins.backend_api.Backend) on the engine Keras was imported with."""

from __future__ import annotations

from typing import Optional

import numpy as np
from keras import ops

from aebench.layers import check_implemented
from aebench.plugins.backend_api import Batch, Weights
from aebench.spec.shapes import ENCODED_NAMES, plan_model
from aebench.spec.types import Spec

from . import engines
from . import weights as canonical
from .losses import TERMS, loss_terms, output
from .model import BUILDERS, Autoencoder
from .precision import allow_float64
from .train import KerasTrainer

_NAMES = {"tensorflow": "keras", "jax": "keras-jax", "torch": "keras-torch"}


class KerasBackend:
    def __init__(self, engine: str):
        self.name = _NAMES[engine]

    def versions(self) -> dict[str, str]:
        return engines.versions()

    def device(self) -> str:
        return engines.device_name()

    def layer_kinds(self) -> frozenset[str]:
        return frozenset(BUILDERS)

    def loss_term_kinds(self) -> frozenset[str]:
        return frozenset(TERMS)

    def build(self, spec: Spec) -> Autoencoder:
        plan = plan_model(spec)
        check_implemented(self.name, BUILDERS, plan.layers)
        allow_float64(spec.dtype)  # the precision switches were set once, when the backend loaded
        model = Autoencoder(plan, spec.dtype)
        model.spec = spec
        return model

    def set_weights(self, model: Autoencoder, weights: Weights) -> None:
        canonical.set_weights(model, weights)

    def get_weights(self, model: Autoencoder) -> Weights:
        return canonical.get_weights(model)

    def _tensor(self, model: Autoencoder, a: Optional[np.ndarray]):
        return None if a is None else ops.convert_to_tensor(np.asarray(a, dtype=model.dtype))

    def _terms(self, model: Autoencoder, batch: Batch, training: bool = True) -> dict:
        t = lambda a: self._tensor(model, a)  # noqa: E731
        x, labels, eps, corruption = t(batch.x), t(batch.labels), t(batch.noise.eps), t(batch.noise.corruption)
        draws = {name: t(draw) for name, draw in batch.noise.draws.items()}
        return loss_terms(model, model.spec, x, labels, eps, corruption, draws, training)

    def loss_terms(self, model: Autoencoder, batch: Batch, training: bool = True) -> dict[str, float]:
        """The terms in training mode (batch statistics) or evaluation mode; the running
        statistics are put back."""
        state = canonical.get_state(model)
        try:
            return {k: float(ops.convert_to_numpy(v)) for k, v in self._terms(model, batch, training).items()}
        finally:
            canonical.set_state(model, state)

    def gradients(self, model: Autoencoder, batch: Batch) -> tuple[dict[str, float], Weights]:
        """Training-mode terms and gradients; the running statistics are put back."""
        state = canonical.get_state(model)
        try:
            terms, grads = engines.value_and_grad(lambda: self._terms(model, batch), model.variables)
        finally:
            canonical.set_state(model, state)
        return ({k: float(ops.convert_to_numpy(v)) for k, v in terms.items()}, canonical.as_weights(model, grads))

    def trainer(
        self, model: Autoencoder, x: np.ndarray, labels: Optional[np.ndarray], steps_per_epoch: Optional[int] = None
    ) -> KerasTrainer:
        return KerasTrainer(model, model.spec, x, labels, steps_per_epoch)

    def encode(self, model: Autoencoder, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        h = model.hidden(self._tensor(model, x), self._tensor(model, labels))
        names = ENCODED_NAMES
        return {names[p.name]: ops.convert_to_numpy(model.head(p.name, h)) for p in model.plan.heads}

    def decode(self, model: Autoencoder, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        logits = model.decode_logits(self._tensor(model, z), self._tensor(model, labels))
        return ops.convert_to_numpy(output(model.spec, logits))
