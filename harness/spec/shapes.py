"""Shape inference: every layer's input and output shape and its canonical parameters.

The canonical weight layout, shared by every backend, is defined here:
- names ``encoder.{i}.kernel`` / ``.bias`` (i = the layer's index in the spec's list),
  ``code.*`` (family ae), ``z_mean.*`` and ``z_log_var.*`` (family vae) or ``logits.*``
  (family categorical: the categorical posterior's logits), ``decoder.{i}.*``;
  a layer inside another continues its name (``encoder.{i}.layers.{j}.*``);
- each layer kind's parameters as its module in aebench.layers states them (Keras'
  layouts); features NHWC, flattened in (H, W, C) order.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from aebench.errors import SpecError
from aebench.layers import latent_head, plan_layer
from aebench.layers.activations import LINEAR
from aebench.layers.base import LayerPlan, Param, Shape, Where
from aebench.spec.schema import shown
from aebench.spec.types import HeightWeight, Images, Layer, Spec, Synthetic

ENCODED_NAMES = {"z_mean": "mean", "z_log_var": "log_var", "code": "code", "logits": "logits"}
"""Latent head -> its key in Backend.encode's result."""


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
    def trainable(self) -> tuple[Param, ...]:
        """The parameters with a gradient and an optimizer slot (``params`` less the state)."""
        return tuple(p for p in self.params if p.trainable)

    @property
    def state(self) -> tuple[Param, ...]:
        """The non-trainable parameters (running statistics), updated by training steps."""
        return tuple(p for p in self.params if not p.trainable)

    @property
    def latent_size(self) -> int:
        return self.heads[0].out_shape[0]


def data_shape(spec: Spec) -> Shape:
    """Shape of one example of the spec's data set (without the label)."""
    data = spec.data
    if isinstance(data, HeightWeight):
        return (2,)
    if isinstance(data, Images):
        return (*data.size, data.channels)
    if isinstance(data, Synthetic):
        return data.shape
    return (784,) if data.flatten else (28, 28, 1)


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
    elif model.family == "categorical":
        head_names, head_act = ("logits",), LINEAR
    else:
        head_names, head_act = ("code",), model.latent.activation
    head_layer = latent_head(model.latent.size, head_act)
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
    return plan_layer(layer, shape, Where(file, name, path))
