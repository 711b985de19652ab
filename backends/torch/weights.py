"""Canonical weights <-> torch parameters.

Dense: canonical (in, out), torch Linear.weight (out, in).
Conv: canonical HWIO, torch OIHW = k.transpose(3, 2, 0, 1).
ConvTranspose: canonical (kh, kw, out, in), torch (in, out, kh, kw) = k.transpose(3, 2, 0, 1),
no spatial flip. Biases are the same in both.
"""

from __future__ import annotations

import numpy as np
import torch

from aebench.plugins.backend_api import Weights
from aebench.plugins.canonical import check_weights

from .model import Autoencoder

_TO_TORCH = (3, 2, 0, 1)
_FROM_TORCH = (2, 3, 1, 0)


def parameter(model: Autoencoder, name: str) -> torch.nn.Parameter:
    """The torch parameter behind a canonical name such as 'encoder.0.kernel'."""
    layer_name, _, role = name.rpartition(".")
    module = model.layer(layer_name)
    return module.weight if role == "kernel" else module.bias


def _relayout(array: np.ndarray, conv_axes: tuple[int, ...]) -> np.ndarray:
    """Dense kernels transpose; conv kernels permute ``conv_axes``; biases stay."""
    return {2: lambda a: a.T, 4: lambda a: a.transpose(conv_axes)}.get(array.ndim, lambda a: a)(array)


def to_torch_layout(array: np.ndarray) -> np.ndarray:
    return _relayout(array, _TO_TORCH)


def to_canonical_layout(array: np.ndarray) -> np.ndarray:
    return _relayout(array, _FROM_TORCH)


@torch.no_grad()
def set_weights(model: Autoencoder, weights: Weights) -> None:
    check_weights(model.plan, weights)
    for p in model.plan.params:
        target = parameter(model, p.name)
        target.copy_(
            torch.as_tensor(np.ascontiguousarray(to_torch_layout(np.asarray(weights[p.name]))), dtype=target.dtype)
        )


def get_weights(model: Autoencoder) -> Weights:
    return {
        p.name: to_canonical_layout(parameter(model, p.name).detach().cpu().numpy()).copy() for p in model.plan.params
    }


def gradients(model: Autoencoder) -> Weights:
    """The .grad of every parameter, in the canonical layout."""
    return {
        p.name: to_canonical_layout(parameter(model, p.name).grad.detach().cpu().numpy()).copy()
        for p in model.plan.params
    }
