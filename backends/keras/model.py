"""The spec as Keras 3 layers, called in order by plain functions (no Model.fit).

Keras' own layouts are the canonical ones: Dense (in, out), Conv2D HWIO, Conv2DTranspose
(kh, kw, out, in), NHWC images, Flatten in (H, W, C) order, 'same' padding with the extra
row/column at the bottom/right on every engine (Keras >= 3.15 on torch). ``BUILDERS`` maps
each layer kind to its Keras layer; a residual block holds its layers' Keras layers, which the
model also keys by their canonical names.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Optional

import keras
import numpy as np
from keras import ops

from aebench.layers import walk
from aebench.layers.activations import Activation
from aebench.layers.conv import explicit_pads, same_pads
from aebench.layers.upsample import source_positions
from aebench.spec.shapes import LayerPlan, ModelPlan
from aebench.spec.types import Spec


def tanh(x):
    """tanh as 2 sigmoid(2x) - 1. Not ops.tanh: on the JAX and torch engines it casts to
    result_type(x, float), which Keras 3.15 makes float32, so a float64 model's tanh is float32."""
    return 2 * ops.sigmoid(2 * x) - 1


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
    if act.name == "elu":
        return ops.elu(x, alpha=act.elu_alpha)
    if act.name == "gelu" and act.approximate == "exact":
        # Not ops.gelu: on TensorFlow its exact form is tf.nn.gelu, off by up to 4e-9 in float64.
        return 0.5 * x * (1 + ops.erf(x / math.sqrt(2)))
    if act.name == "gelu":
        # Not ops.gelu either: tf.nn.gelu's tanh form is off by 4e-10 in float64.
        return 0.5 * x * (1 + tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    if act.name == "silu":
        return ops.silu(x)
    return tanh(x)


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
    if act.name == "elu":
        return ops.where(pre > 0, one, act.elu_alpha * ops.exp(ops.minimum(pre, 0)))
    if act.name == "silu":
        s = ops.sigmoid(pre)
        return s * (1 + pre * (1 - s))
    if act.name == "gelu" and act.approximate == "exact":
        return 0.5 * (1 + ops.erf(pre / math.sqrt(2))) + pre * ops.exp(-0.5 * pre**2) / math.sqrt(2 * math.pi)
    if act.name == "gelu":
        scale = math.sqrt(2 / math.pi)
        t = tanh(scale * (pre + 0.044715 * pre**3))
        return 0.5 * (1 + t) + 0.5 * pre * (1 - t**2) * scale * (1 + 3 * 0.044715 * pre**2)
    return 1 - tanh(pre) ** 2


class Framed(keras.layers.Layer):
    """A convolution between layers before it (padding, a permutation) and one after it
    (cropping, a permutation); its ``kernel`` and ``bias`` are the convolution's."""

    def __init__(
        self, before: list[keras.layers.Layer], conv: keras.layers.Layer, after: keras.layers.Layer, dtype: str
    ):
        super().__init__(dtype=dtype)
        self.before, self.conv, self.after = before, conv, after

    def build(self, input_shape) -> None:
        for layer in self.before:
            input_shape = layer.compute_output_shape(input_shape)
        self.conv.build(input_shape)

    @property
    def kernel(self):
        return self.conv.kernel

    @property
    def bias(self):
        return self.conv.bias

    def call(self, x):
        for layer in self.before:
            x = layer(x)
        return self.after(self.conv(x))


def _conv(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    """Conv2D; a whole-number or per-side padding is ZeroPadding2D before a 'valid' Conv2D.

    One filter in float64 on the torch engine runs channels-first: Keras makes the (1, C, k, k)
    kernel and the input channels-last in memory, and torch 2.13's CPU float64 convolution
    backward then raises 'slow_conv2d: grad_weight must be contiguous'.
    """
    layer = plan.layer
    channels_first = layer.filters == 1 and dtype == "float64" and keras.backend.backend() == "torch"
    own_padding = isinstance(layer.padding, str)
    if own_padding and not channels_first:
        return keras.layers.Conv2D(
            layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding, dtype=dtype
        )
    before = [] if own_padding else [keras.layers.ZeroPadding2D(explicit_pads(layer.padding), dtype=dtype)]
    after = keras.layers.Identity(dtype=dtype)
    data_format = "channels_last"
    if channels_first:
        before.append(keras.layers.Permute((3, 1, 2), dtype=dtype))
        after, data_format = keras.layers.Permute((2, 3, 1), dtype=dtype), "channels_first"
    conv = keras.layers.Conv2D(
        layer.filters,
        layer.kernel,
        strides=layer.stride,
        padding=layer.padding if own_padding else "valid",
        data_format=data_format,
        dtype=dtype,
    )
    return Framed(before, conv, after, dtype)


def _conv_transpose(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    """Conv2DTranspose; torch's whole-number padding p is a 'valid' one with its output_padding,
    cropped by p on every side (Cropping2D)."""
    layer = plan.layer
    if isinstance(layer.padding, str):
        return keras.layers.Conv2DTranspose(
            layer.filters, layer.kernel, strides=layer.stride, padding=layer.padding, dtype=dtype
        )
    conv = keras.layers.Conv2DTranspose(
        layer.filters,
        layer.kernel,
        strides=layer.stride,
        padding="valid",
        output_padding=layer.output_padding,
        dtype=dtype,
    )
    crop = keras.layers.Cropping2D(layer.padding, dtype=dtype)
    return Framed([], conv, crop, dtype)


class PaddedAveragePooling(keras.layers.Layer):
    """ZeroPadding2D with TensorFlow's 'same' pads, AveragePooling2D 'valid', and for
    ``real_cells`` each window's mean rescaled to its real cells (counted once, in NumPy)."""

    def __init__(self, plan: LayerPlan, real_cells: bool, dtype: str):
        super().__init__(dtype=dtype)
        layer = plan.layer
        pads = tuple(same_pads(n, layer.size, layer.step) for n in plan.in_shape[:2])
        self.pad = keras.layers.ZeroPadding2D(pads, dtype=dtype)
        self.pool = keras.layers.AveragePooling2D(layer.size, layer.step, padding="valid", dtype=dtype)
        ones = np.pad(np.ones(plan.in_shape[:2]), pads)
        windows = np.lib.stride_tricks.sliding_window_view(ones, (layer.size, layer.size))
        counts = windows[:: layer.step, :: layer.step].sum(axis=(2, 3))
        self.rescale = (layer.size**2 / counts)[None, :, :, None] if real_cells else None

    def call(self, x):
        pooled = self.pool(self.pad(x))
        return pooled if self.rescale is None else pooled * ops.convert_to_tensor(self.rescale, self.compute_dtype)


def _avg_pool(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    """AveragePooling2D, whose 'same' divides by the real cells. The whole-window divisor pads
    first; so does the real-cell one on the torch engine, whose AveragePooling2D pads
    asymmetric 'same' windows with zeros that it then counts as real (Keras 3.15)."""
    layer = plan.layer
    real_cells = layer.count_include_pad is False
    if layer.padding == "valid" or (real_cells and keras.backend.backend() != "torch"):
        return keras.layers.AveragePooling2D(layer.size, layer.step, padding=layer.padding, dtype=dtype)
    return PaddedAveragePooling(plan, real_cells, dtype)


class HalfPixelBilinear(keras.layers.Layer):
    """Bilinear upsampling with half-pixel centres written out (separable, ops.take and weights)."""

    def __init__(self, plan: LayerPlan, dtype: str):
        super().__init__(dtype=dtype)
        self.positions = [source_positions(n, plan.layer.factor) for n in plan.in_shape[:2]]

    def call(self, x):
        for axis, (low, high, frac) in zip((1, 2), self.positions):
            shape = [1, 1, 1, 1]
            shape[axis] = len(frac)
            weight = ops.convert_to_tensor(frac.reshape(shape), self.compute_dtype)
            x = ops.take(x, low, axis=axis) * (1 - weight) + ops.take(x, high, axis=axis) * weight
        return x


def _upsample(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    """UpSampling2D, except bilinear in float64 on TensorFlow: tf.image.resize computes in
    float32 whatever its input (2.6e-7 off in float64)."""
    layer = plan.layer
    if layer.interpolation == "bilinear" and dtype == "float64" and keras.backend.backend() == "tensorflow":
        return HalfPixelBilinear(plan, dtype)
    return keras.layers.UpSampling2D(layer.factor, interpolation=layer.interpolation, dtype=dtype)


def _moments(x) -> tuple:
    """Per-channel mean and biased variance as sums over counts: ops.mean, ops.var and
    ops.moments accumulate float64 in float32 on the JAX and torch engines (Keras 3.15)."""
    axes = tuple(range(len(x.shape) - 1))
    n = float(math.prod(x.shape[:-1]))
    mean = ops.sum(x, axis=axes) / n
    return mean, ops.sum(ops.square(x - mean), axis=axes) / n


class BatchNorm(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization with momentum = 1 - the spec's (Keras' is the old
    statistics' weight) and the spec's epsilon, called with ``training``. Keras updates the
    moving variance with the biased batch variance; ``unbiased`` redoes that update by hand.
    Canonical running_mean, running_var are Keras' moving_mean, moving_variance."""

    def __init__(self, plan: LayerPlan, dtype: str):
        layer = plan.layer
        super().__init__(axis=-1, momentum=1.0 - layer.momentum, epsilon=layer.epsilon, dtype=dtype)
        self.new_weight, self.unbiased = layer.momentum, layer.variance_update == "unbiased"

    @property
    def running_mean(self) -> keras.Variable:
        return self.moving_mean

    @property
    def running_var(self) -> keras.Variable:
        return self.moving_variance

    def call(self, inputs, training=None, mask=None):
        old = ops.copy(self.moving_variance.value)  # TensorFlow and torch: .value is the variable itself
        if self.dtype == "float64" and keras.backend.backend() in ("jax", "torch"):
            out = self._float64_call(inputs, training)
        else:
            out = super().call(inputs, training=training)
        if training and self.unbiased:
            n = math.prod(inputs.shape[:-1])
            unbiased = _moments(ops.stop_gradient(inputs))[1] * (n / (n - 1))
            self.moving_variance.assign(old + self.new_weight * (unbiased - old))
        return out

    def _float64_call(self, inputs, training):
        """Keras' own call, less its cast to result_type(dtype, 'float32'), which on the JAX and
        torch engines is float32 (Keras 3.15): 4e-8 off in a float64 model."""
        mean, variance = self.moving_mean.value, self.moving_variance.value
        if training:
            mean, variance = _moments(inputs)
            self.moving_mean.assign(self.moving_mean.value * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance.value * self.momentum + variance * (1.0 - self.momentum))
        return ops.batch_normalization(
            inputs, mean, variance, axis=-1, offset=self.beta.value, scale=self.gamma.value, epsilon=self.epsilon
        )


Draws = Mapping[str, object]
"""The layers' injected draws of a training batch (engine tensors), by canonical layer name (Noise.draws)."""
NO_DRAWS: Draws = {}
Taps = dict[str, dict[str, object]]
"""The intermediates layers tap for the loss terms, by canonical layer name (a vector
quantizer's 'input', 'codes', 'indices': aebench.layers.vector_quantizer)."""


class Residual(keras.layers.Layer):
    """A residual block: its layers in order (each with its activation), plus its input or its
    projection. ``nested`` holds the layers inside it by canonical name; called with
    ``training``, it passes that and the batch's ``draws`` on to them (``apply``)."""

    def __init__(self, plan: LayerPlan, dtype: str):
        super().__init__(dtype=dtype)
        n = len(plan.layer.layers)
        self.body_plans, self.projection_plans = plan.children[:n], plan.children[n:]
        self.body = [keras_layer(child, dtype) for child in self.body_plans]
        self.projection = [keras_layer(child, dtype) for child in self.projection_plans]

    @property
    def nested(self) -> dict[str, keras.layers.Layer]:
        plans = self.body_plans + self.projection_plans
        return {plan.name: layer for plan, layer in zip(plans, [*self.body, *self.projection])}

    def build(self, input_shape) -> None:
        """Nothing to build: the layers inside were built for their shapes when made."""

    def call(self, x, training: bool = False, draws: Optional[Draws] = None, taps: Optional[Taps] = None):
        h = x
        for plan, layer in zip(self.body_plans, self.body):
            h = apply(layer, plan, h, training, draws or NO_DRAWS, taps)
        shortcut = x
        for plan, layer in zip(self.projection_plans, self.projection):
            shortcut = apply(layer, plan, x, training, draws or NO_DRAWS, taps)
        return h + shortcut


class InjectedDropout(keras.layers.Layer):
    """keras.layers.Dropout's inverted dropout (kept values times 1 / (1 - rate)) with the mask
    injected: called with ``training=True`` and a uniform ``draw``, a value is kept where its
    draw is >= rate; otherwise the identity. keras.layers.Dropout would draw its own mask from a
    SeedGenerator, whose numbers differ between engines."""

    def __init__(self, plan: LayerPlan, dtype: str):
        super().__init__(dtype=dtype)
        self.rate = plan.layer.rate

    def call(self, inputs, draw=None, training=False):
        if not training:
            return inputs
        if draw is None:
            raise ValueError("a dropout layer runs in training mode without its injected draw")
        return ops.where(draw >= self.rate, inputs / (1 - self.rate), ops.zeros_like(inputs))


def first_argmin(x):
    """The first index of the smallest value of each row of a (N, K) array, from ops.min and
    ops.where. Not ops.argmin: it documents no rule for equal values, and on the JAX engine Keras
    3.15 casts float64 to float32 before jnp.argmin (its fix for flushed negative zeros calls
    result_type(dtype, 'float32'), float32 off TensorFlow), so distances 1e-12 apart tie and the
    first wins (docs/EQUIVALENCE.md, "The zoo's loss terms")."""
    k = x.shape[1]
    positions = ops.expand_dims(ops.arange(k, dtype="int32"), 0)
    at_minimum = ops.equal(x, ops.min(x, axis=1, keepdims=True))
    return ops.min(ops.where(at_minimum, positions, ops.full_like(positions, k)), axis=1)


class VectorQuantizer(keras.layers.Layer):
    """Nearest-code quantization of the last axis, as aebench.layers.vector_quantizer states it:
    the distances ||z||^2 - 2 z.e + ||e||^2 added left to right, the cross term by ops.einsum
    (ops.matmul on the torch engine computes float64 in float32: known_gaps.txt), first_argmin,
    the picked codes as a one-hot einsum (a gather's gradient is an IndexedSlices on TensorFlow),
    the output z + ops.stop_gradient(z_q - z). Called, it returns the output and the taps (input,
    codes, indices, in the canonical (B, V, D) and (B, V) layouts). ``update: gradient`` makes
    the (K, D) codebook (``embeddings``) trainable; ``ema`` makes it and the cluster sizes and sums non-trainable
    variables, assigned in training mode after the codes were picked (from a copy of the
    codebook: TensorFlow's and torch's ``.value`` is the variable itself)."""

    def __init__(self, plan: LayerPlan, dtype: str):
        super().__init__(dtype=dtype)
        self.settings, self.ema = plan.layer, plan.layer.update == "ema"
        self.k, self.d = plan.layer.codes, plan.in_shape[-1]

    def build(self, input_shape) -> None:
        self.embeddings = self.add_weight(shape=(self.k, self.d), initializer="zeros", trainable=not self.ema)
        if self.ema:
            self.cluster_size = self.add_weight(shape=(self.k,), initializer="zeros", trainable=False)
            self.embedding_sum = self.add_weight(shape=(self.k, self.d), initializer="zeros", trainable=False)

    def call(self, x, training: bool = False):
        codebook = ops.copy(self.embeddings.value) if self.ema else self.embeddings.value
        z = ops.reshape(x, (-1, self.d))
        cross = ops.einsum("nd,kd->nk", z, codebook)
        distances = ops.sum(z * z, axis=1, keepdims=True) - 2.0 * cross + ops.sum(codebook * codebook, axis=1)
        indices = first_argmin(distances)
        one_hot = ops.cast(ops.equal(ops.expand_dims(indices, 1), ops.arange(self.k, dtype="int32")[None]), z.dtype)
        codes = ops.einsum("nk,kd->nd", one_hot, codebook)
        if training and self.ema:
            self._update(ops.stop_gradient(z), one_hot)
        out = z + ops.stop_gradient(codes - z)
        batch = ops.shape(x)[0]
        taps = {
            "input": ops.reshape(z, (batch, -1, self.d)),
            "codes": ops.reshape(codes, (batch, -1, self.d)),
            "indices": ops.reshape(indices, (batch, -1)),
        }
        return ops.reshape(out, ops.shape(x)), taps

    def _update(self, z, one_hot) -> None:
        """The moving averages and the codebook they give."""
        k, gamma, eps = self.k, self.settings.decay, self.settings.epsilon
        cluster = gamma * self.cluster_size.value + (1 - gamma) * ops.sum(one_hot, axis=0)
        embed = gamma * self.embedding_sum.value + (1 - gamma) * ops.einsum("nk,nd->kd", one_hot, z)
        n = ops.sum(cluster)
        smoothed = (cluster + eps) / (n + k * eps) * n
        self.embeddings.assign(embed / ops.expand_dims(smoothed, 1))
        self.cluster_size.assign(cluster)
        self.embedding_sum.assign(embed)


BUILDERS: dict[str, Callable[[LayerPlan, str], keras.layers.Layer]] = {
    "dense": lambda plan, dtype: keras.layers.Dense(plan.layer.units, dtype=dtype),
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "flatten": lambda plan, dtype: keras.layers.Flatten(dtype=dtype),
    "reshape": lambda plan, dtype: keras.layers.Reshape(plan.layer.shape, dtype=dtype),
    "max_pool": lambda plan, dtype: keras.layers.MaxPooling2D(
        plan.layer.size, plan.layer.step, padding=plan.layer.padding, dtype=dtype
    ),
    "avg_pool": _avg_pool,
    "upsample": _upsample,
    "batch_norm": BatchNorm,
    "residual": Residual,
    "dropout": InjectedDropout,
    "vector_quantizer": VectorQuantizer,
}
"""Layer kind (aebench.layers) -> the Keras layer computing it before its activation."""


def keras_layer(plan: LayerPlan, dtype: str) -> keras.layers.Layer:
    """The layer of ``plan``, built for its input shape."""
    made = BUILDERS[plan.layer.type](plan, dtype)
    made.build((None, *plan.in_shape))
    return made


def apply(
    layer: keras.layers.Layer,
    plan: LayerPlan,
    x,
    training: bool = False,
    draws: Draws = NO_DRAWS,
    taps: Optional[Taps] = None,
):
    """``layer`` (of ``plan``) on x, then the layer's activation; with ``training``, in training
    mode (batch statistics, the injected ``draws``: the layers that read them get them). The
    layers' taps go into ``taps`` when given."""
    if isinstance(layer, VectorQuantizer):
        out, found = layer(x, training=training)
        if taps is not None:
            taps[plan.name] = found
    elif isinstance(layer, Residual):
        out = layer(x, training=training, draws=draws, taps=taps)
    elif training and isinstance(layer, BatchNorm):
        out = layer(x, training=True)
    elif training and isinstance(layer, InjectedDropout):
        out = layer(x, draw=draws.get(plan.name), training=True)
    else:
        out = layer(x)
    act = getattr(plan.layer, "activation", None)
    return out if act is None else activate(act, out)


class Autoencoder:
    """Built Keras layers keyed by canonical name; hidden, head and decode_logits, in
    evaluation mode, or in training mode (``training=True``: batch statistics, the layers
    assign their updated state, running statistics, to their variables; dropout with the
    layers' injected ``draws``)."""

    spec: Spec  # set by KerasBackend.build

    def __init__(self, plan: ModelPlan, dtype: str):
        self.plan, self.dtype = plan, dtype
        self.layers = {p.name: keras_layer(p, dtype) for p in plan.layers}
        for p in walk(plan.layers):  # the layers inside a residual block: its own Keras layers
            self.layers.update(getattr(self.layers[p.name], "nested", {}))
        self.by_name = {p.name: p for p in plan.layers}

    def variable(self, name: str) -> keras.Variable:
        """The Keras variable behind a canonical name such as 'encoder.0.kernel'."""
        layer_name, _, role = name.rpartition(".")
        return getattr(self.layers[layer_name], role)

    @property
    def variables(self) -> list:
        """Trainable variables in canonical order (kernel, bias per layer): what gradients and
        optimizers see."""
        return [self.variable(p.name) for p in self.plan.trainable]

    @property
    def state(self) -> list:
        """Non-trainable variables (running statistics) in canonical order."""
        return [self.variable(p.name) for p in self.plan.state]

    def apply(self, plan: LayerPlan, x, training: bool = False, draws: Draws = NO_DRAWS):
        return apply(self.layers[plan.name], plan, x, training, draws)

    def hidden(self, x_in, labels: Optional[object], training: bool = False, draws: Draws = NO_DRAWS):
        h = _join(x_in, labels)
        for plan in self.plan.encoder:
            h = self.apply(plan, h, training, draws)
        return h

    def head(self, name: str, h, training: bool = False):
        return self.apply(self.by_name[name], h, training)

    def decode_logits(
        self, z, labels: Optional[object], training: bool = False, draws: Draws = NO_DRAWS, taps: Optional[Taps] = None
    ):
        """The decoder's logits; the layers' taps go into ``taps`` when given."""
        h = _join(z, labels)
        for plan in self.plan.decoder:
            h = apply(self.layers[plan.name], plan, h, training, draws, taps)
        return h


def _join(x, labels):
    return x if labels is None else ops.concatenate([x, labels], axis=1)
