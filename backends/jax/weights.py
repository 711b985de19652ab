"""Canonical weights <-> the Flax parameter tree. The layouts are the same (model.py says
why), so conversion is only nesting: 'encoder.0.kernel' <-> params['encoder.0']['kernel']."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from aebench.plugins.backend_api import Weights
from aebench.plugins.canonical import check_weights
from aebench.spec.shapes import ModelPlan, Param

from .model import Params


def to_params(plan: ModelPlan, weights: Weights, dtype: jnp.dtype, device: jax.Device) -> Params:
    check_weights(plan, weights)
    params: Params = {}
    for p in plan.params:
        layer, _, role = p.name.rpartition(".")
        params.setdefault(layer, {})[role] = jax.device_put(
            jnp.asarray(np.asarray(weights[p.name]), dtype=dtype), device
        )
    return params


def to_weights(params_of: tuple[Param, ...], params: Params) -> Weights:
    """The canonical arrays of ``params_of`` (plan.params, or plan.trainable for gradients)."""
    out = {}
    for p in params_of:
        layer, _, role = p.name.rpartition(".")
        out[p.name] = np.array(params[layer][role])
    return out
