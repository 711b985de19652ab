"""The spec built from torch.nn modules, matching the canonical (Keras) semantics.

Images are NCHW inside the model and NHWC outside it, and every convolution reads an
NCHW-contiguous activation (not an NCHW view of NHWC memory, nor the channels-last output a
convolution may return for a one-channel input): ``.contiguous()`` before each one.
With mixed memory formats, inductor's fake (meta) convolution_backward predicted
channels-last strides for the grad of the last transposed convolution's input (its
one-channel weight and output are both layouts at once), cuDNN returned contiguous, and the
compiled backward failed its stride assertion (vae_conv, batch 1024, H100; pytorch#171622 is
the same family). One layout everywhere leaves nothing for the two to disagree on.

'same' convolutions pad as TensorFlow does (the extra row/column at the bottom/right:
torch's padding=1 would pad both sides); transposed convolutions run unpadded and are
cropped to Keras' output length (torch's padding=1, output_padding=1 has the right shape
but is shifted one pixel). ``BUILDERS`` maps each layer kind to its module; a residual block
holds its layers' modules (``layers``, ``projection``), found by canonical name with ``find_op``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from aebench.layers.activations import Activation
from aebench.layers.conv import explicit_pads, same_pads
from aebench.layers.conv_transpose import deconv_crop
from aebench.spec.shapes import LayerPlan, ModelPlan
from aebench.spec.types import Spec


def activation(act: Optional[Activation]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation as a torch function (identity for a layer without one)."""
    if act is None:
        return lambda x: x
    return {
        "linear": lambda x: x,
        "relu": F.relu,
        "leaky_relu": functools.partial(F.leaky_relu, negative_slope=act.negative_slope or 0.0),
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "elu": functools.partial(F.elu, alpha=act.elu_alpha),
        "gelu": functools.partial(F.gelu, approximate="none" if act.approximate == "exact" else "tanh"),
        "silu": F.silu,
    }[act.name]


def conv_pads(plan: LayerPlan) -> tuple[tuple[int, int], tuple[int, int]]:
    """((top, bottom), (left, right)) of a convolution: TensorFlow's for 'same', else the spec's."""
    layer = plan.layer
    if layer.padding == "same":
        return tuple(same_pads(n, layer.kernel, layer.stride) for n in plan.in_shape[:2])
    return explicit_pads(layer.padding)


class PaddedConv2d(nn.Conv2d):
    """Conv2d with the spec's padding: torch's own ``padding=`` where it is symmetric, else
    F.pad first (TensorFlow's 'same' puts the odd extra row and column after)."""

    def __init__(self, plan: LayerPlan):
        layer = plan.layer
        (top, bottom), (left, right) = conv_pads(plan)
        symmetric = top == bottom and left == right
        padding = (top, left) if symmetric else 0
        super().__init__(plan.in_shape[2], layer.filters, layer.kernel, layer.stride, padding=padding)
        self.pads = (0, 0, 0, 0) if symmetric else (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x.contiguous())


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d: torch's own ``padding=p, output_padding=q`` for a whole-number padding;
    for 'same' and 'valid', run unpadded and cropped (or zero-extended) to Keras' length."""

    def __init__(self, plan: LayerPlan):
        layer = plan.layer
        h, w = plan.in_shape[:2]
        k, s = layer.kernel, layer.stride
        self.crop = isinstance(layer.padding, str)
        if not self.crop:
            super().__init__(
                plan.in_shape[2], layer.filters, k, s, padding=layer.padding, output_padding=layer.output_padding
            )
            return
        self.rows, self.cols = deconv_crop(h, layer), deconv_crop(w, layer)
        extra = max(self.rows[1] - ((h - 1) * s + k), self.cols[1] - ((w - 1) * s + k), 0)
        super().__init__(plan.in_shape[2], layer.filters, k, s, padding=0, output_padding=extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x.contiguous())
        if not self.crop:
            return out
        (r0, nr), (c0, nc) = self.rows, self.cols
        return out[:, :, r0 : r0 + nr, c0 : c0 + nc]


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


def tf_same_pads(plan: LayerPlan, size: int, stride: int) -> tuple[int, int, int, int]:
    """F.pad's (left, right, top, bottom) for TensorFlow's 'same' window (extra after); zeros for 'valid'."""
    if plan.layer.padding != "same":
        return (0, 0, 0, 0)
    top, bottom = same_pads(plan.in_shape[0], size, stride)
    left, right = same_pads(plan.in_shape[1], size, stride)
    return (left, right, top, bottom)


class MaxPool(nn.Module):
    """F.max_pool2d after TensorFlow's 'same' padding with -inf (padded cells never win)."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.size, self.stride = plan.layer.size, plan.layer.step
        self.pads = tf_same_pads(plan, self.size, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads, value=-math.inf)
        return F.max_pool2d(x, self.size, self.stride)


class AvgPool(nn.Module):
    """F.avg_pool2d after TensorFlow's 'same' padding with zeros. torch pads only symmetrically,
    so with ``count_include_pad: false`` the sums are divided by each window's real cells
    (counted once, from a padded image of ones) rather than by size^2."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        layer = plan.layer
        self.size, self.stride = layer.size, layer.step
        self.pads = tf_same_pads(plan, self.size, self.stride)
        rescale = torch.ones(1, 1, *plan.out_shape[:2], dtype=torch.float64)
        if layer.count_include_pad is False:
            ones = F.pad(torch.ones(1, 1, *plan.in_shape[:2], dtype=torch.float64), self.pads)
            rescale = 1 / F.avg_pool2d(ones, self.size, self.stride)
        self.register_buffer("rescale", rescale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        pooled = F.avg_pool2d(x, self.size, self.stride)
        return pooled * self.rescale if any(self.pads) else pooled


class Upsample(nn.Module):
    """F.interpolate by an integer factor; bilinear with align_corners=False (half-pixel centres)."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.factor, self.mode = plan.layer.factor, plan.layer.interpolation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "nearest":
            return F.interpolate(x, scale_factor=self.factor, mode="nearest")
        return F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)


def batch_norm(plan: LayerPlan) -> nn.Module:
    """nn.BatchNorm1d (flat) or nn.BatchNorm2d (images, NCHW inside the model) with the spec's
    momentum (torch's convention: the new batch's weight) and epsilon; torch updates the
    running variance with the unbiased batch variance, so ``biased`` updates it by hand."""
    layer = plan.layer
    base = nn.BatchNorm1d if len(plan.in_shape) == 1 else nn.BatchNorm2d
    cls = base if layer.variance_update == "unbiased" else _biased_update(base)
    return cls(plan.in_shape[-1], eps=layer.epsilon, momentum=layer.momentum)


@functools.cache
def _biased_update(base: type[nn.modules.batchnorm._BatchNorm]) -> type[nn.Module]:
    class BiasedUpdate(base):
        """Normalises as torch does; updates the running variance with the biased batch variance."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return super().forward(x)
            out = F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)
            dims = [0, *range(2, x.dim())]
            with torch.no_grad():
                self.running_mean.lerp_(x.mean(dims), self.momentum)
                self.running_var.lerp_(x.var(dims, unbiased=False), self.momentum)
            return out

    BiasedUpdate.__name__ = f"{base.__name__}BiasedUpdate"
    return BiasedUpdate


Draws = Mapping[str, torch.Tensor]
"""The layers' injected draws of a training batch, by canonical layer name (Noise.draws)."""
NO_DRAWS: Draws = {}
Taps = dict[str, dict[str, torch.Tensor]]
"""The intermediates layers tap for the loss terms, by canonical layer name (a vector
quantizer's 'input', 'codes', 'indices': aebench.layers.vector_quantizer)."""


class Residual(nn.Module):
    """A residual block: its layers in order (each with its activation), plus its input or its
    projection; the block's own activation comes after (``Activated``). The layers inside get
    the batch's draws in training, and the pass's taps."""

    takes_draws = True

    def __init__(self, plan: LayerPlan):
        super().__init__()
        n = len(plan.layer.layers)
        self.layers = nn.ModuleList(Activated(child) for child in plan.children[:n])
        self.projection = Activated(plan.children[n]) if plan.layer.projection else None

    def forward(self, x: torch.Tensor, draws: Draws, taps: Optional[Taps] = None) -> torch.Tensor:
        h = x
        for module in self.layers:
            h = module(h, draws, taps)
        return h + (x if self.projection is None else self.projection(x, draws, taps))


class InjectedDropout(nn.Module):
    """nn.Dropout's inverted dropout (kept values times 1 / (1 - rate)) with the mask injected:
    in training a value is kept where its uniform draw (canonical layout, NHWC for images) is
    >= rate; in evaluation (``eval()``) the identity. nn.Dropout would draw its own mask from
    torch's generator."""

    takes_draws = True

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.rate, self.name = plan.layer.rate, plan.name

    def forward(self, x: torch.Tensor, draws: Draws) -> torch.Tensor:
        if not self.training:
            return x
        draw = draws.get(self.name)
        if draw is None:
            raise ValueError("a dropout layer runs in training mode without its injected draw")
        if draw.dim() == 4:
            draw = draw.permute(0, 3, 1, 2)
        return torch.where(draw >= self.rate, x / (1 - self.rate), 0.0)


class VectorQuantizer(nn.Module):
    """Nearest-code quantization of the last canonical axis (channels: NCHW images are
    quantized in NHWC order), as aebench.layers.vector_quantizer states it: the distances
    ||z||^2 - 2 z.e + ||e||^2 added left to right, torch.argmin (the first index among equal
    distances, as torch documents), the output z + (z_q - z).detach(). ``update: gradient``
    makes the (K, D) codebook (``embeddings``) a Parameter; ``ema`` makes it and the cluster sizes and sums
    buffers, updated in training mode after the codes are picked (under no_grad). It taps its
    input, the picked codes (``embeddings[indices]``: their gradient reaches the codebook) and the
    indices into ``taps``, in the canonical (B, V, D) and (B, V) layouts."""

    takes_taps = True

    def __init__(self, plan: LayerPlan):
        super().__init__()
        layer = plan.layer
        self.name, self.layer, self.images = plan.name, layer, len(plan.in_shape) == 3
        k, d = layer.codes, plan.in_shape[-1]
        if layer.update == "gradient":
            self.embeddings = nn.Parameter(torch.empty(k, d))
        else:
            self.register_buffer("embeddings", torch.empty(k, d))
            self.register_buffer("cluster_size", torch.empty(k))
            self.register_buffer("embedding_sum", torch.empty(k, d))

    def forward(self, x: torch.Tensor, taps: Taps) -> torch.Tensor:
        canonical = x.permute(0, 2, 3, 1) if self.images else x
        codebook = self.embeddings
        z = canonical.reshape(-1, codebook.shape[1])
        distances = (z * z).sum(dim=1, keepdim=True) - 2.0 * (z @ codebook.T) + (codebook * codebook).sum(dim=1)
        indices = torch.argmin(distances, dim=1)
        codes = codebook[indices]
        if self.layer.update == "ema" and self.training:
            self._update(z.detach(), indices)
        out = z + (codes - z).detach()
        per_example = (x.shape[0], -1, codebook.shape[1])
        taps[self.name] = {
            "input": z.reshape(per_example),
            "codes": codes.reshape(per_example),
            "indices": indices.reshape(x.shape[0], -1),
        }
        out = out.reshape(canonical.shape)
        return out.permute(0, 3, 1, 2).contiguous() if self.images else out

    @torch.no_grad()
    def _update(self, z: torch.Tensor, indices: torch.Tensor) -> None:
        """The moving averages and the codebook they give, after the codes were picked."""
        k, gamma, eps = self.layer.codes, self.layer.decay, self.layer.epsilon
        one_hot = F.one_hot(indices, k).to(z.dtype)
        cluster = gamma * self.cluster_size + (1 - gamma) * one_hot.sum(dim=0)
        embed = gamma * self.embedding_sum + (1 - gamma) * (one_hot.T @ z)
        n = cluster.sum()
        smoothed = (cluster + eps) / (n + k * eps) * n
        self.embeddings.copy_(embed / smoothed[:, None])
        self.cluster_size.copy_(cluster)
        self.embedding_sum.copy_(embed)


BUILDERS: dict[str, Callable[[LayerPlan], nn.Module]] = {
    "dense": lambda plan: nn.Linear(plan.in_shape[0], plan.layer.units),
    "conv": PaddedConv2d,
    "conv_transpose": CroppedConvTranspose2d,
    "flatten": lambda plan: FlattenNHWC(),
    "reshape": lambda plan: ReshapeNCHW(plan.layer.shape),
    "max_pool": MaxPool,
    "avg_pool": AvgPool,
    "upsample": Upsample,
    "batch_norm": batch_norm,
    "residual": Residual,
    "dropout": InjectedDropout,
    "vector_quantizer": VectorQuantizer,
}
"""Layer kind (aebench.layers) -> the module computing it before its activation."""


class Activated(nn.Module):
    """A layer's module followed by the layer's activation. ``op`` holds the parameters; a
    layer that reads the batch's injected draws (``takes_draws``: dropout, a block holding
    layers) gets them as a second argument, and a block also the pass's taps; a layer that
    taps intermediates (``takes_taps``) gets the taps (a throwaway dict when None)."""

    def __init__(self, plan: LayerPlan):
        super().__init__()
        self.op = BUILDERS[plan.layer.type](plan)
        self.act = activation(getattr(plan.layer, "activation", None))

    def forward(self, x: torch.Tensor, draws: Draws = NO_DRAWS, taps: Optional[Taps] = None) -> torch.Tensor:
        if getattr(self.op, "takes_taps", False):
            return self.act(self.op(x, {} if taps is None else taps))
        if isinstance(self.op, Residual):
            return self.act(self.op(x, draws, taps))
        return self.act(self.op(x, draws) if getattr(self.op, "takes_draws", False) else self.op(x))


class Autoencoder(nn.Module):
    """Encoder stack, latent heads ('code' or 'z_mean' and 'z_log_var'), decoder stack."""

    def __init__(self, spec: Spec, plan: ModelPlan):
        super().__init__()
        self.plan = plan
        self.family = spec.model.family
        self.encoder = nn.ModuleList(Activated(p) for p in plan.encoder)
        self.heads = nn.ModuleDict({p.name: Activated(p) for p in plan.heads})
        self.decoder = nn.ModuleList(Activated(p) for p in plan.decoder)

    def layer(self, name: str) -> nn.Module:
        """The module holding a canonical layer's parameters ('encoder.3', 'z_mean', 'decoder.0',
        'encoder.3.layers.0')."""
        return self.heads[name].op if name in self.heads else find_op(self, name)

    def hidden(self, x_in: torch.Tensor, labels: Optional[torch.Tensor], draws: Draws = NO_DRAWS) -> torch.Tensor:
        """Encoder stack output for canonical-layout input (NHWC images); ``draws`` in training."""
        h = _join(x_in, labels)
        if h.dim() == 4:
            h = h.permute(0, 3, 1, 2).contiguous()
        for module in self.encoder:
            h = module(h, draws)
        return h

    def head(self, name: str, h: torch.Tensor) -> torch.Tensor:
        return self.heads[name](h)

    def decode_logits(
        self, z: torch.Tensor, labels: Optional[torch.Tensor], draws: Draws = NO_DRAWS, taps: Optional[Taps] = None
    ) -> torch.Tensor:
        """Decoder output before the output activation, canonical layout (NHWC images); ``draws``
        in training; the layers' taps go into ``taps`` when given."""
        h = _join(z, labels)
        for module in self.decoder:
            h = module(h, draws, taps)
        return h.permute(0, 2, 3, 1) if h.dim() == 4 else h


def find_op(owner: nn.Module, name: str) -> nn.Module:
    """The ``op`` of the layer ``name`` inside ``owner``, its attributes and list indices in turn:
    'encoder.3' is owner.encoder[3].op, 'encoder.3.projection' that op's projection.op."""
    attribute, _, rest = name.partition(".")
    found = getattr(owner, attribute)
    if isinstance(found, nn.ModuleList):
        index, _, rest = rest.partition(".")
        found = found[int(index)]
    return find_op(found.op, rest) if rest else found.op


def _join(x: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
    return x if labels is None else torch.cat([x, labels], dim=1)
