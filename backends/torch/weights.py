"""Canonical weights <-> torch parameters.

Dense: canonical (in, out), torch Linear.weight (out, in).
Conv: canonical HWIO, torch OIHW = k.transpose(3, 2, 0, 1).
ConvTranspose: canonical (kh, kw, out, in), torch (in, out, kh, kw) = k.transpose(3, 2, 0, 1),
no spatial flip. Biases are the same in both. BatchNorm: gamma, beta are weight, bias; running_mean,
running_var are the buffers of the same names. Only kernels change layout: a vector quantizer's
(K, D) embeddings and (K, D) embedding_sum are torch's (K, D) tensors of the same names (nn.Embedding's
layout), its cluster_size too.
"""

from __future__ import annotations

import numpy as np
import torch

from aebench.plugins.backend_api import Weights
from aebench.plugins.canonical import check_weights

from .model import Autoencoder

_TO_TORCH = (3, 2, 0, 1)
_FROM_TORCH = (2, 3, 1, 0)


_ATTRIBUTE = {"kernel": "weight", "gamma": "weight", "beta": "bias"}
"""Canonical role -> torch attribute where the names differ (running_mean, running_var: the same)."""


def parameter(model: Autoencoder, name: str) -> torch.Tensor:
    """The torch parameter (or buffer, for state) behind a canonical name such as 'encoder.0.kernel'."""
    layer_name, _, role = name.rpartition(".")
    return getattr(model.layer(layer_name), _ATTRIBUTE.get(role, role))


def get_state(model: Autoencoder) -> list[torch.Tensor]:
    """Copies of the model's state (running statistics), in plan order."""
    return [parameter(model, p.name).detach().clone() for p in model.plan.state]


@torch.no_grad()
def set_state(model: Autoencoder, state: list[torch.Tensor]) -> None:
    for p, value in zip(model.plan.state, state):
        parameter(model, p.name).copy_(value)


def _relayout(array: np.ndarray, role: str, conv_axes: tuple[int, ...]) -> np.ndarray:
    """Dense kernels transpose; conv kernels permute ``conv_axes``; every other role stays."""
    if role != "kernel":
        return array
    return {2: lambda a: a.T, 4: lambda a: a.transpose(conv_axes)}.get(array.ndim, lambda a: a)(array)


def to_torch_layout(array: np.ndarray, role: str = "kernel") -> np.ndarray:
    """A canonical array of a parameter of ``role`` (Param.role) in torch's layout."""
    return _relayout(array, role, _TO_TORCH)


def to_canonical_layout(array: np.ndarray, role: str = "kernel") -> np.ndarray:
    """A torch array of a parameter of ``role`` (Param.role) in the canonical layout."""
    return _relayout(array, role, _FROM_TORCH)


@torch.no_grad()
def set_weights(model: Autoencoder, weights: Weights) -> None:
    check_weights(model.plan, weights)
    for p in model.plan.params:
        target = parameter(model, p.name)
        target.copy_(
            torch.as_tensor(
                np.ascontiguousarray(to_torch_layout(np.asarray(weights[p.name]), p.role)), dtype=target.dtype
            )
        )


def get_weights(model: Autoencoder) -> Weights:
    return {
        p.name: to_canonical_layout(parameter(model, p.name).detach().cpu().numpy(), p.role).copy()
        for p in model.plan.params
    }


def gradients(model: Autoencoder) -> Weights:
    """The .grad of every trainable parameter, in the canonical layout."""
    return {
        p.name: to_canonical_layout(parameter(model, p.name).grad.detach().cpu().numpy(), p.role).copy()
        for p in model.plan.trainable
    }
