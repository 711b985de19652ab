"""The PyTorch backend (aebench.plugins.backend_api.Backend).

Precision: the process's, set once when the backend loads (precision.py; ieee-fp32 switches
TF32 off for matmuls and cuDNN convolutions, so float32 means IEEE float32 on Ampere/Hopper
GPUs too); nothing here sets it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Optional

import numpy as np
import torch

from aebench.layers import check_implemented
from aebench.plugins.backend_api import Batch, Weights, loss_term_names
from aebench.spec.shapes import ENCODED_NAMES, plan_model
from aebench.spec.types import Spec

from . import weights as canonical
from .losses import TERMS, loss_terms, output
from .model import BUILDERS, Autoencoder
from .train import TorchTrainer

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@contextlib.contextmanager
def in_mode(model: Autoencoder, training: bool) -> Iterator[None]:
    """The model in training mode (batch statistics) with its state (running statistics) put
    back afterwards, or in evaluation mode (running statistics); its mode is restored."""
    was, state = model.training, canonical.get_state(model)
    model.train(training)
    try:
        yield
    finally:
        model.train(was)
        if training:
            canonical.set_state(model, state)


class TorchBackend:
    name = "torch"

    def __init__(self) -> None:
        self._device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def versions(self) -> dict[str, str]:
        return {"torch": torch.__version__}

    def device(self) -> str:
        if self._device.type == "cuda":
            return f"cuda:0 ({torch.cuda.get_device_name(0)})"
        return "cpu"

    def layer_kinds(self) -> frozenset[str]:
        return frozenset(BUILDERS)

    def loss_term_kinds(self) -> frozenset[str]:
        return frozenset(TERMS)

    def build(self, spec: Spec) -> Autoencoder:
        plan = plan_model(spec)
        check_implemented(self.name, BUILDERS, plan.layers)
        model = Autoencoder(spec, plan)
        model.spec = spec
        return model.to(device=self._device, dtype=_DTYPES[spec.dtype])

    def set_weights(self, model: Autoencoder, weights: Weights) -> None:
        canonical.set_weights(model, weights)

    def get_weights(self, model: Autoencoder) -> Weights:
        return canonical.get_weights(model)

    def _tensor(self, model: Autoencoder, array: Optional[np.ndarray]) -> Optional[torch.Tensor]:
        if array is None:
            return None
        return torch.as_tensor(np.asarray(array), dtype=_DTYPES[model.spec.dtype], device=self._device)

    def _terms(self, model: Autoencoder, batch: Batch) -> dict[str, torch.Tensor]:
        t = lambda a: self._tensor(model, a)  # noqa: E731
        noise = batch.noise
        draws = {name: t(draw) for name, draw in noise.draws.items()}
        return loss_terms(model, model.spec, t(batch.x), t(batch.labels), t(noise.eps), t(noise.corruption), draws)

    def loss_terms(self, model: Autoencoder, batch: Batch, training: bool = True) -> dict[str, float]:
        """The terms in training mode (batch statistics) or evaluation mode; the running
        statistics are left as they were."""
        with torch.no_grad(), in_mode(model, training):
            return {k: float(v) for k, v in self._terms(model, batch).items()}

    def gradients(self, model: Autoencoder, batch: Batch) -> tuple[dict[str, float], Weights]:
        """Training-mode terms and gradients; the running statistics are left as they were."""
        model.zero_grad(set_to_none=True)
        with in_mode(model, training=True):  # the backward pass reads the buffers: restore after it
            terms = self._terms(model, batch)
            terms["total"].backward()
        grads = canonical.gradients(model)
        model.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in terms.items()}, grads

    def trainer(
        self, model: Autoencoder, x: np.ndarray, labels: Optional[np.ndarray], steps_per_epoch: Optional[int] = None
    ) -> TorchTrainer:
        return TorchTrainer(model, model.spec, x, labels, self._device, _DTYPES[model.spec.dtype], steps_per_epoch)

    @torch.no_grad()
    def encode(self, model: Autoencoder, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        with in_mode(model, training=False):
            return self._encode(model, x, labels)

    def _encode(self, model: Autoencoder, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        h = model.hidden(self._tensor(model, x), self._tensor(model, labels))
        names = ENCODED_NAMES
        return {names[name]: model.head(name, h).cpu().numpy() for name in model.heads}

    @torch.no_grad()
    def decode(self, model: Autoencoder, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        with in_mode(model, training=False):
            logits = model.decode_logits(self._tensor(model, z), self._tensor(model, labels))
        return output(model.spec, logits).cpu().numpy()


__all__ = ["TorchBackend", "loss_term_names"]
