"""The spec built from torch.nn modules, matching the canonical (Keras) semantics.

Images are NCHW inside the model and NHWC outside it, and every convolution reads an
NCHW-contiguous activation (not an NCHW view of NHWC memory, nor the channels-last output a
convolution may return for a one-channel input): ``.contiguous()`` before each one.
With mixed memory formats, inductor's fake (meta) convolution_backward predicted
channels-last strides for the grad of the last transposed convolution's input (its
one-channel weight and output are both layouts at once), cuDNN returned contiguous, and the
compiled backward failed its stride assertion (vae_conv, batch 1024, H100; pytorch#171622 is
the same family). One layout everywhere leaves nothing for the two to disagree on.

'same' convolutions pad as
TensorFlow does (the extra row/column at the bottom/right: torch's padding=1 would pad both
sides); transposed convolutions run unpadded and are cropped to Keras' output length
(torch's padding=1, output_padding=1 has the right shape but is shifted one pixel).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from aebench.spec.shapes import LayerPlan, ModelPlan, deconv_crop, same_pads
from aebench.spec.types import Activation, Conv, ConvTranspose, Dense, Flatten, Reshape, Spec


def activation(act: Activation) -> Callable[[torch.Tensor], torch.Tensor]:
    return {
        "linear": lambda x: x,
        "relu": F.relu,
        "leaky_relu": functools.partial(F.leaky_relu, negative_slope=act.negative_slope or 0.0),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
    }[act.name]


class DenseLayer(nn.Linear):
    def __init__(self, plan: LayerPlan):
        super().__init__(plan.in_shape[0], plan.layer.units)
        self.act = activation(plan.layer.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x))


class SameConv2d(nn.Conv2d):
    """Conv2d with explicit, possibly asymmetric, TensorFlow padding."""

    def __init__(self, plan: LayerPlan):
        layer: Conv = plan.layer
        super().__init__(plan.in_shape[2], layer.filters, layer.kernel, layer.stride, padding=0)
        self.act = activation(layer.activation)
        self.pads = (0, 0, 0, 0)
        if layer.padding == "same":
            top, bottom = same_pads(plan.in_shape[0], layer.kernel, layer.stride)
            left, right = same_pads(plan.in_shape[1], layer.kernel, layer.stride)
            self.pads = (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return self.act(super().forward(x.contiguous()))


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d run unpadded, then cropped (or zero-extended) to Keras' length."""

    def __init__(self, plan: LayerPlan):
        layer: ConvTranspose = plan.layer
        h, w = plan.in_shape[:2]
        k, s = layer.kernel, layer.stride
        self.rows, self.cols = deconv_crop(h, k, s, layer.padding), deconv_crop(w, k, s, layer.padding)
        extra = max(self.rows[1] - ((h - 1) * s + k), self.cols[1] - ((w - 1) * s + k), 0)
        super().__init__(plan.in_shape[2], layer.filters, k, s, padding=0, output_padding=extra)
        self.act = activation(layer.activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (r0, nr), (c0, nc) = self.rows, self.cols
        return self.act(super().forward(x.contiguous())[:, :, r0 : r0 + nr, c0 : c0 + nc])


class FlattenNHWC(nn.Module):
    """Flattens NCHW features in Keras' (H, W, C) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1).flatten(1) if x.dim() == 4 else x.flatten(1)


class ReshapeNCHW(nn.Module):
    """Reshapes flat (H, W, C)-ordered features to NCHW."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], *self.shape)
        return x.permute(0, 3, 1, 2).contiguous() if len(self.shape) == 3 else x


def make_layer(plan: LayerPlan) -> nn.Module:
    layer = plan.layer
    if isinstance(layer, Dense):
        return DenseLayer(plan)
    if isinstance(layer, Conv):
        return SameConv2d(plan)
    if isinstance(layer, ConvTranspose):
        return CroppedConvTranspose2d(plan)
    if isinstance(layer, Flatten):
        return FlattenNHWC()
    if isinstance(layer, Reshape):
        return ReshapeNCHW(layer.shape)
    raise TypeError(layer)  # pragma: no cover


class Autoencoder(nn.Module):
    """Encoder stack, latent heads ('code' or 'z_mean' and 'z_log_var'), decoder stack."""

    def __init__(self, spec: Spec, plan: ModelPlan):
        super().__init__()
        self.plan = plan
        self.family = spec.model.family
        self.encoder = nn.ModuleList(make_layer(p) for p in plan.encoder)
        self.heads = nn.ModuleDict({p.name: make_layer(p) for p in plan.heads})
        self.decoder = nn.ModuleList(make_layer(p) for p in plan.decoder)

    def layer(self, name: str) -> nn.Module:
        """The module of a canonical layer name ('encoder.3', 'z_mean', 'decoder.0')."""
        stack, _, index = name.partition(".")
        return self.heads[name] if not index else getattr(self, stack)[int(index)]

    def hidden(self, x_in: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Encoder stack output for canonical-layout input (NHWC images)."""
        h = _join(x_in, labels)
        if h.dim() == 4:
            h = h.permute(0, 3, 1, 2).contiguous()
        for module in self.encoder:
            h = module(h)
        return h

    def head(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.heads[name](h)

    def decode_logits(self, z: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        """Decoder output before the output activation, canonical layout (NHWC images)."""
        h = _join(z, labels)
        for module in self.decoder:
            h = module(h)
        return h.permute(0, 2, 3, 1) if h.dim() == 4 else h


def _join(x: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    return x if labels is None else torch.cat([x, labels], dim=1)
