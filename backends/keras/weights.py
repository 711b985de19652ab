"""Canonical weights <-> Keras variables: the layouts are identical (model.py), so this only
assigns and reads arrays, in canonical order."""

from __future__ import annotations

import numpy as np
from keras import ops

from aebench.plugins.backend_api import Weights
from aebench.plugins.canonical import check_weights

from .model import Autoencoder


def set_weights(model: Autoencoder, weights: Weights) -> None:
    """Every canonical weight, state (running statistics) included."""
    check_weights(model.plan, weights)
    for p in model.plan.params:
        model.variable(p.name).assign(np.asarray(weights[p.name], dtype=model.dtype))


def get_weights(model: Autoencoder) -> Weights:
    return {p.name: np.array(ops.convert_to_numpy(model.variable(p.name).value)) for p in model.plan.params}


def as_weights(model: Autoencoder, arrays: list) -> Weights:
    """Per-trainable-variable arrays (gradients) as canonical weights."""
    return {p.name: np.array(ops.convert_to_numpy(a)) for p, a in zip(model.plan.trainable, arrays)}


def get_state(model: Autoencoder) -> list:
    """The state's (running statistics') current values, to put back with set_state."""
    return [ops.convert_to_numpy(v.value) for v in model.state]


def set_state(model: Autoencoder, values: list) -> None:
    for variable, value in zip(model.state, values):
        variable.assign(value)
