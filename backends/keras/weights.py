"""Canonical weights <-> Keras variables: the layouts are identical (model.py), so this only
assigns and reads arrays, in canonical order."""

from __future__ import annotations

import numpy as np
from keras import ops

from aebench.plugins.backend_api import Weights
from aebench.plugins.canonical import check_weights

from .model import Autoencoder


def set_weights(model: Autoencoder, weights: Weights) -> None:
    check_weights(model.plan, weights)
    for p, variable in zip(model.plan.params, model.variables):
        variable.assign(np.asarray(weights[p.name], dtype=model.dtype))


def get_weights(model: Autoencoder) -> Weights:
    return {p.name: np.array(ops.convert_to_numpy(v.value)) for p, v in zip(model.plan.params, model.variables)}


def as_weights(model: Autoencoder, arrays: list) -> Weights:
    """Per-variable arrays (gradients) as canonical weights."""
    return {p.name: np.array(ops.convert_to_numpy(a)) for p, a in zip(model.plan.params, arrays)}
