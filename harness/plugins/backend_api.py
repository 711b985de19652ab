"""The contract every backend implements, and the data that crosses it.

Everything crossing the contract is NumPy in the canonical layout (shapes.py): weights,
gradients, batches and the injected noise. Randomness is never drawn inside a framework:
the reparameterisation noise, the corruption noise, the layers' draws (dropout masks) and
the loss terms' draws (prior samples, projections) are inputs, so every backend sees the
same numbers and can be compared with the NumPy oracle term by term.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from aebench.layers import check_implemented
from aebench.losses import check_terms_implemented, present_terms, term_weights
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec

Weights = dict[str, np.ndarray]


def loss_term_names(spec: Spec) -> tuple[str, ...]:
    """The loss terms a spec has, 'total' first, then in rank order (aebench.losses)."""
    return ("total", *present_terms(spec.loss))


def with_total(spec: Spec, terms: dict):
    """The unweighted terms plus their weighted 'total', in loss_term_names order.

    Only * and + touch the values, so the same code adds up NumPy, torch, JAX or Keras
    scalars, always in the same order (the terms' ranks).
    """
    total = None
    for name, weight in term_weights(spec.loss).items():
        part = weight * terms[name]
        total = part if total is None else total + part
    terms = {**terms, "total": total}
    return {name: terms[name] for name in loss_term_names(spec)}


@dataclass(frozen=True)
class Noise:
    """Injected randomness for one batch.

    eps: (B, latent) standard normal, for z = mean + exp(log_var / 2) * eps (family vae);
    (B, k, latent) for k = model.latent.samples > 1, z then flattened example-major to (B k,
    latent), the decoder running on every row (aebench.losses.base.Forward); or Gumbel(0, 1),
    for z = softmax((logits + eps) / tau) per variable (family categorical: aebench.categorical).
    corruption: (B, *data_shape): standard normal for gaussian corruption, uniform [0, 1)
    for masking and salt-and-pepper.
    draws: uniform [0, 1) draws of the layers that take one in training (LayerKind.draws:
    a dropout layer keeps a value where its draw is >= rate), by canonical layer name, each
    (B, *that layer's input shape) (a decoder layer's (B k, ...) for k > 1: it runs on every
    sample of z), not drawn for evaluation; and the draws of the loss terms
    that take them (LossTerm.draws: prior samples, projections), in training and evaluation,
    by aebench.losses.base.draw_key; family categorical's temperature tau, 0-d, under
    aebench.categorical.TEMPERATURE_KEY (the training step's, or evaluation's), every batch.
    """

    eps: Optional[np.ndarray] = None
    corruption: Optional[np.ndarray] = None
    draws: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True)
class Batch:
    """Clean examples x (also the reconstruction target), one-hot labels for conditional
    specs, and the noise for this batch."""

    x: np.ndarray
    labels: Optional[np.ndarray]
    noise: Noise


@dataclass(frozen=True)
class Step:
    """One training step: which training examples (indices into the data given to the
    trainer) and the noise to use."""

    indices: np.ndarray
    noise: Noise


class Trainer(Protocol):
    def run(self, steps: Iterable[Step]) -> np.ndarray:
        """Take the steps in order; returns the loss terms before each update,
        shape (n_steps, len(loss_term_names(spec))), float64."""


class Backend(Protocol):
    """One framework's implementation of every spec."""

    name: str

    def versions(self) -> dict[str, str]:
        """Framework package versions, e.g. {'torch': '2.13.0'}."""

    def device(self) -> str:
        """Where the arrays live, e.g. 'cpu' or 'cuda:0 (NVIDIA H100)'."""

    def layer_kinds(self) -> frozenset[str]:
        """The layer kinds (aebench.layers) this backend has a builder for."""

    def loss_term_kinds(self) -> frozenset[str]:
        """The loss terms (aebench.losses) this backend computes."""

    def build(self, spec: Spec) -> object:
        """A model for the spec in the spec's dtype, weights unset (call set_weights);
        LayerNotImplemented if the spec has a layer kind outside layer_kinds()."""

    def set_weights(self, model: object, weights: Weights) -> None:
        """Load canonical weights (names and shapes of shapes.plan_model)."""

    def get_weights(self, model: object) -> Weights:
        """The model's weights in the canonical layout, as NumPy arrays."""

    def loss_terms(self, model: object, batch: Batch, training: bool = True) -> dict[str, float]:
        """Every loss term of the spec for the batch (no update): in training mode (batch
        statistics and the batch's layer draws, as a training step computes them) or,
        ``training=False``, in evaluation mode (running statistics, no dropout; the draws are
        not read). Either way the model's state (running statistics) is left as it was."""

    def gradients(self, model: object, batch: Batch) -> tuple[dict[str, float], Weights]:
        """The loss terms and the gradient of the total with respect to every canonical weight."""

    def trainer(
        self, model: object, x: np.ndarray, labels: Optional[np.ndarray], steps_per_epoch: Optional[int] = None
    ) -> Trainer:
        """A trainer that keeps x (and one-hot labels) on the device and updates the model in
        place with the spec's optimizer. A ``per: epoch`` learning-rate schedule steps after
        every ``steps_per_epoch`` updates (None: the training loop's epoch of x,
        aebench.plugins.adam.epoch_steps(len(x), spec.train.batch_size))."""

    def encode(self, model: object, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        """{'mean', 'log_var'} for family vae, {'logits'} (B, N K: the categorical posterior's
        logits, variable n in columns n K .. n K + K - 1) for family categorical, {'code'} for
        family ae (no corruption)."""

    def decode(self, model: object, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        """Decoder output with the output activation applied (sigmoid for images), from z of
        (B, latent) (family categorical: (B, N K), one-hot or relaxed codes)."""


def check_implements(backend: Backend, spec: Spec) -> None:
    """LayerNotImplemented or LossTermNotImplemented (one line: 'BACKEND does not implement
    ...') when ``backend`` lacks a layer kind or a loss term of ``spec``."""
    check_implemented(backend.name, backend.layer_kinds(), plan_model(spec).layers)
    check_terms_implemented(backend.name, backend.loss_term_kinds(), spec.loss)
