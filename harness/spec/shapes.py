"""Shape inference: every layer's input and output shape and its canonical parameters.

The canonical weight layout, shared by every backend, is defined here:
- names ``encoder.{i}.kernel`` / ``.bias`` (i = the layer's index in the spec's list),
  ``code.*`` (family ae) or ``z_mean.*`` and ``z_log_var.*`` (family vae), ``decoder.{i}.*``;
- Dense kernels (in, out); Conv kernels HWIO (kh, kw, in, out); ConvTranspose kernels
  (kh, kw, out, in) as in Keras; biases (out,); features NHWC, flattened in (H, W, C) order.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Literal

from aebench.errors import SpecError
from aebench.spec.schema import shown
from aebench.spec.types import LINEAR, Conv, ConvTranspose, Dense, Flatten, HeightWeight, Layer, Reshape, Spec

Shape = tuple[int, ...]

ENCODED_NAMES = {"z_mean": "mean", "z_log_var": "log_var", "code": "code"}
"""Latent head -> its key in Backend.encode's result."""


@dataclass(frozen=True)
class Param:
    """One canonical parameter array."""

    name: str
    shape: Shape
    role: Literal["kernel", "bias"]
    fan_in: int
    fan_out: int


@dataclass(frozen=True)
class LayerPlan:
    """A layer with its canonical name, shapes and parameters."""

    name: str
    layer: Layer
    in_shape: Shape
    out_shape: Shape
    params: tuple[Param, ...]


@dataclass(frozen=True)
class ModelPlan:
    """The whole network: encoder stack, latent heads, decoder stack."""

    data_shape: Shape
    label_size: int
    encoder: tuple[LayerPlan, ...]
    heads: tuple[LayerPlan, ...]
    decoder: tuple[LayerPlan, ...]

    @property
    def layers(self) -> tuple[LayerPlan, ...]:
        return self.encoder + self.heads + self.decoder

    @property
    def params(self) -> tuple[Param, ...]:
        """Every canonical parameter, in a fixed order."""
        return tuple(p for layer in self.layers for p in layer.params)

    @property
    def latent_size(self) -> int:
        return self.heads[0].out_shape[0]


def data_shape(spec: Spec) -> Shape:
    """Shape of one example of the spec's data set (without the label)."""
    if isinstance(spec.data, HeightWeight):
        return (2,)
    return (784,) if spec.data.flatten else (28, 28, 1)


def plan_model(spec: Spec, file: str = "<spec>") -> ModelPlan:
    """Infer every shape of ``spec``; raises SpecError naming ``file`` and the offending field.

    A spec is planned once per process: specs are frozen, so the plan is cached by value
    and every caller (loading, timing, FLOPs, the backends' build) shares it.
    """
    try:
        return _planned(spec)
    except SpecError as exc:
        raise SpecError(file, exc.field, exc.message) from None


@functools.lru_cache(maxsize=64)
def _planned(spec: Spec) -> ModelPlan:
    file = "<spec>"
    model = spec.model
    shape = data_shape(spec)
    label_size = model.conditioning.num_classes if model.conditional else 0
    if label_size and len(shape) != 1:
        raise SpecError(
            file, "model.conditioning", f"needs flat input data (data.flatten: true), got examples of shape {shape}"
        )
    encoder, shape = _plan_stack(file, "encoder", model.encoder, (shape[0] + label_size,) if label_size else shape)
    if len(shape) != 1:
        raise SpecError(
            file,
            "model.encoder",
            f"must end with flat features for the latent layer; it ends with shape {shown(shape)}: "
            "add {type: flatten}",
        )
    head_names: tuple[str, ...]
    if model.family == "vae":
        head_names, head_act = ("z_mean", "z_log_var"), LINEAR
    else:
        head_names, head_act = ("code",), model.latent.activation
    head_layer = Dense("dense", model.latent.size, head_act)
    heads = tuple(_plan_layer(file, name, "model.latent", head_layer, shape) for name in head_names)
    decoder, out_shape = _plan_stack(file, "decoder", model.decoder, (model.latent.size + label_size,))
    expected = data_shape(spec)
    if out_shape != expected:
        raise SpecError(
            file,
            "model.decoder",
            f"outputs shape {shown(out_shape)} but the data ({spec.data.name}) has shape {expected}",
        )
    return ModelPlan(expected, label_size, encoder, heads, decoder)


def _plan_stack(file: str, stack: str, layers: tuple[Layer, ...], shape: Shape) -> tuple[tuple[LayerPlan, ...], Shape]:
    plans = []
    for i, layer in enumerate(layers):
        plan = _plan_layer(file, f"{stack}.{i}", f"model.{stack}[{i}]", layer, shape)
        plans.append(plan)
        shape = plan.out_shape
    return tuple(plans), shape


def _plan_layer(file: str, name: str, path: str, layer: Layer, shape: Shape) -> LayerPlan:
    def fail(field: str, message: str) -> SpecError:
        return SpecError(file, f"{path}.{field}" if field else path, message)

    out: Shape
    params: tuple[Param, ...]
    if isinstance(layer, Dense):
        if len(shape) != 1:
            raise fail("type", f"dense needs flat input, got shape {shown(shape)}: add {{type: flatten}} before it")
        out = (layer.units,)
        params = _kernel_bias(name, (shape[0], layer.units), layer.units, shape[0], layer.units)
    elif isinstance(layer, (Conv, ConvTranspose)):
        if len(shape) != 3:
            raise fail(
                "type",
                f"{layer.type} needs (height, width, channels) input, got shape {shown(shape)}: "
                "add {type: reshape, shape: [h, w, c]} before it",
            )
        h, w, c = shape
        k, s = layer.kernel, layer.stride
        receptive = k * k
        if isinstance(layer, Conv):
            if k > h or k > w:
                raise fail("kernel", f"{k} is larger than its input {h}x{w}; allowed: 1..{min(h, w)}")
            out = (conv_length(h, k, s, layer.padding), conv_length(w, k, s, layer.padding), layer.filters)
            params = _kernel_bias(
                name, (k, k, c, layer.filters), layer.filters, receptive * c, receptive * layer.filters
            )
        else:
            out = (deconv_length(h, k, s, layer.padding), deconv_length(w, k, s, layer.padding), layer.filters)
            params = _kernel_bias(
                name, (k, k, layer.filters, c), layer.filters, receptive * layer.filters, receptive * c
            )
    elif isinstance(layer, Flatten):
        out, params = (math.prod(shape),), ()
    elif isinstance(layer, Reshape):
        if math.prod(layer.shape) != math.prod(shape):
            raise fail(
                "shape",
                f"{shown(list(layer.shape))} holds {shown(math.prod(layer.shape))} values but its input "
                f"{shown(shape)} holds {shown(math.prod(shape))}",
            )
        out, params = tuple(layer.shape), ()
    else:  # pragma: no cover - the schema admits no other layer
        raise TypeError(layer)
    return LayerPlan(name, layer, shape, out, params)


def _kernel_bias(name: str, kernel: Shape, units: int, fan_in: int, fan_out: int) -> tuple[Param, Param]:
    """Fans follow Keras' compute_fans, so glorot and lecun draw from the same laws."""
    return (
        Param(f"{name}.kernel", kernel, "kernel", fan_in, fan_out),
        Param(f"{name}.bias", (units,), "bias", fan_in, fan_out),
    )


def conv_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a strided convolution ('same' as TensorFlow: ceil(n / s))."""
    return -(-n // s) if padding == "same" else (n - k) // s + 1


def same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's 'same' padding (before, after) for a convolution: the extra goes after."""
    total = max((conv_length(n, k, s, "same") - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def deconv_length(n: int, k: int, s: int, padding: str) -> int:
    """Output length of a transposed convolution, as Keras defines it."""
    return n * s if padding == "same" else n * s + max(k - s, 0)


def deconv_crop(n: int, k: int, s: int, padding: str) -> tuple[int, int]:
    """(start, length) to take from the full transposed convolution of length (n-1)*s + k.

    The full output may be shorter than ``length`` (k < s): the rest is zeros.
    """
    length = deconv_length(n, k, s, padding)
    start = max(k - s, 0) // 2 if padding == "same" else 0
    return start, length
