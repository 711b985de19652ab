"""The spec as Flax linen layers applied to canonical parameters.

Parameters are a dict {layer name: {'kernel', 'bias'}} in the canonical layout, which is
Flax's own for Dense (in, out) and Conv (HWIO); ConvTranspose takes the Keras
(kh, kw, out, in) kernel unchanged with ``transpose_kernel=True`` (with Flax's default the
kernel would need a spatial flip and a channel swap). 'SAME' padding is lax's, which puts
the extra row/column at the bottom/right, as TensorFlow does. Images are NHWC throughout.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from aebench.plugins.bench_api import Precision
from aebench.spec.shapes import LayerPlan, ModelPlan
from aebench.spec.types import Activation, Conv, ConvTranspose, Dense, Flatten, Reshape

from .precision import layer_precision

Params = dict[str, dict[str, jax.Array]]


def activation(act: Activation) -> Callable[[jax.Array], jax.Array]:
    return {
        "linear": lambda x: x,
        "relu": jax.nn.relu,
        "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=act.negative_slope or 0.0),
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
    }[act.name]


def flax_module(plan: LayerPlan, dtype: jnp.dtype) -> Optional[nn.Module]:
    layer = plan.layer
    common = dict(dtype=dtype, param_dtype=dtype, precision=layer_precision(Precision()))
    if isinstance(layer, Dense):
        return nn.Dense(layer.units, **common)
    if isinstance(layer, Conv):
        return nn.Conv(
            layer.filters,
            (layer.kernel, layer.kernel),
            strides=(layer.stride, layer.stride),
            padding=layer.padding.upper(),
            **common,
        )
    if isinstance(layer, ConvTranspose):
        return nn.ConvTranspose(
            layer.filters,
            (layer.kernel, layer.kernel),
            strides=(layer.stride, layer.stride),
            padding=layer.padding.upper(),
            transpose_kernel=True,
            **common,
        )
    return None


class Autoencoder:
    """Pure functions of (params, inputs): hidden, head, decode_logits."""

    def __init__(self, plan: ModelPlan, dtype: jnp.dtype):
        self.plan, self.dtype = plan, dtype
        self.modules = {p.name: flax_module(p, dtype) for p in plan.layers}
        self.acts = {p.name: activation(p.layer.activation) for p in plan.layers if hasattr(p.layer, "activation")}
        self.by_name = {p.name: p for p in plan.layers}

    def apply_layer(self, params: Params, plan: LayerPlan, x: jax.Array) -> jax.Array:
        if isinstance(plan.layer, Flatten):
            return x.reshape(x.shape[0], -1)
        if isinstance(plan.layer, Reshape):
            return x.reshape(x.shape[0], *plan.layer.shape)
        module = self.modules[plan.name]
        assert module is not None, f"{plan.name} has no parameters to apply"
        return self.acts[plan.name](module.apply({"params": params[plan.name]}, x))

    def hidden(self, params: Params, x_in: jax.Array, labels: Optional[jax.Array]) -> jax.Array:
        h = _join(x_in, labels)
        for plan in self.plan.encoder:
            h = self.apply_layer(params, plan, h)
        return h

    def head(self, params: Params, name: str, h: jax.Array) -> jax.Array:
        return self.apply_layer(params, self.by_name[name], h)

    def decode_logits(self, params: Params, z: jax.Array, labels: Optional[jax.Array]) -> jax.Array:
        h = _join(z, labels)
        for plan in self.plan.decoder:
            h = self.apply_layer(params, plan, h)
        return h


def _join(x: jax.Array, labels: Optional[jax.Array]) -> jax.Array:
    return x if labels is None else jnp.concatenate([x, labels], axis=1)
