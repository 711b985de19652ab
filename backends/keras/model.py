"""The spec as Keras 3 layers, called in order by plain functions (no Model.fit).

Keras' own layouts are the canonical ones: Dense (in, out), Conv2D HWIO, Conv2DTranspose
(kh, kw, out, in), NHWC images, Flatten in (H, W, C) order, 'same' padding with the extra
row/column at the bottom/right on every engine (Keras >= 3.15 on torch).
"""

from __future__ import annotations

from typing import Optional

import keras
from keras import ops

from aebench.spec.shapes import LayerPlan, ModelPlan
from aebench.spec.types import Activation, Conv, ConvTranspose, Dense, Flatten, Reshape, Spec


def activate(act: Activation, x):
    if act.name == "linear":
        return x
    if act.name == "relu":
        return ops.relu(x)
    if act.name == "leaky_relu":
        # Not ops.leaky_relu: on TensorFlow it rounds the slope to float32 (0.30000001) in float64 models.
        return ops.where(x >= 0, x, x * act.negative_slope)
    if act.name == "sigmoid":
        return ops.sigmoid(x)
    return ops.tanh(x)


def activation_slope(act: Activation, pre):
    """d activate / d pre, elementwise (for the chain-rule Jacobian of the contractive term)."""
    one = ops.ones_like(pre)
    if act.name == "linear":
        return one
    if act.name == "relu":
        return ops.where(pre > 0, one, ops.zeros_like(pre))
    if act.name == "leaky_relu":
        return ops.where(pre >= 0, one, one * act.negative_slope)
    if act.name == "sigmoid":
        s = ops.sigmoid(pre)
        return s * (1 - s)
    return 1 - ops.tanh(pre) ** 2


def keras_layer(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    layer = plan.layer
    if isinstance(layer, Dense):
        made = keras.layers.Dense(layer.units, dtype=dtype)
    elif isinstance(layer, Conv):
        made = keras.layers.Conv2D(
            layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding, dtype=dtype
        )
    elif isinstance(layer, ConvTranspose):
        made = keras.layers.Conv2DTranspose(
            layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding, dtype=dtype
        )
    elif isinstance(layer, Flatten):
        made = keras.layers.Flatten(dtype=dtype)
    elif isinstance(layer, Reshape):
        made = keras.layers.Reshape(layer.shape, dtype=dtype)
    else:  # pragma: no cover
        raise TypeError(layer)
    made.build((None, *plan.in_shape))
    return made


class Autoencoder:
    """Built Keras layers keyed by canonical name; hidden, head and decode_logits."""

    spec: Spec  # set by KerasBackend.build

    def __init__(self, plan: ModelPlan, dtype: str):
        self.plan, self.dtype = plan, dtype
        self.layers = {p.name: keras_layer(p, dtype) for p in plan.layers}
        self.by_name = {p.name: p for p in plan.layers}

    @property
    def variables(self) -> list:
        """Trainable variables in canonical order (kernel, bias per layer)."""
        out = []
        for p in self.plan.params:
            layer_name, _, role = p.name.rpartition(".")
            out.append(getattr(self.layers[layer_name], role))
        return out

    def apply(self, plan: LayerPlan, x):
        out = self.layers[plan.name](x)
        act = getattr(plan.layer, "activation", None)
        return out if act is None else activate(act, out)

    def hidden(self, x_in, labels: Optional[object]):
        h = _join(x_in, labels)
        for plan in self.plan.encoder:
            h = self.apply(plan, h)
        return h

    def head(self, name: str, h):
        return self.apply(self.by_name[name], h)

    def decode_logits(self, z, labels: Optional[object]):
        h = _join(z, labels)
        for plan in self.plan.decoder:
            h = self.apply(plan, h)
        return h


def _join(x, labels):
    return x if labels is None else ops.concatenate([x, labels], axis=1)
