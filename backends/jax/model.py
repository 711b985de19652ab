"""The spec as Flax linen layers applied to canonical parameters.

Parameters are a dict {layer name: {'kernel', 'bias'}} in the canonical layout, which is
Flax's own for Dense (in, out) and Conv (HWIO); ConvTranspose takes the Keras
(kh, kw, out, in) kernel unchanged with ``transpose_kernel=True`` (with Flax's default the
kernel would need a spatial flip and a channel swap). 'SAME' padding is lax's, which puts
the extra row/column at the bottom/right, as TensorFlow does. Images are NHWC throughout.
``BUILDERS`` maps each layer kind to a pure function of (its parameters, input); a layer with
layers inside it (residual) gets instead a function that applies them (NestedFn).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Optional, Union, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from aebench.layers import walk
from aebench.layers.activations import Activation
from aebench.layers.conv import explicit_pads
from aebench.layers.conv_transpose import deconv_crop
from aebench.spec.shapes import LayerPlan, ModelPlan

from .precision import applied_level

Params = dict[str, dict[str, jax.Array]]
LayerFn = Callable[[dict[str, jax.Array], jax.Array], jax.Array]
"""(this layer's parameters, input) -> output before the activation."""
TrainFn = Callable[[dict[str, jax.Array], jax.Array, Optional[jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]
"""(this layer's parameters and state, input, its injected draw or None) -> (training-mode
output, its updated state: empty for a stateless layer)."""
Apply = Callable[[LayerPlan, jax.Array], jax.Array]
"""(a layer inside this one, its input) -> its output after its activation."""
NestedFn = Callable[[Apply, jax.Array], jax.Array]
"""(apply the layers inside, input) -> output before the activation: a layer holding layers,
whose parameters and state are theirs (the model applies them, in training mode or not)."""


def activation(act: Optional[Activation]) -> Callable[[jax.Array], jax.Array]:
    """The activation as a JAX function (identity for a layer without one)."""
    if act is None:
        return lambda x: x
    return {
        "linear": lambda x: x,
        "relu": jax.nn.relu,
        "leaky_relu": functools.partial(jax.nn.leaky_relu, negative_slope=act.negative_slope or 0.0),
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "elu": functools.partial(jax.nn.elu, alpha=act.elu_alpha),
        "gelu": functools.partial(jax.nn.gelu, approximate=act.approximate == "tanh"),
        "silu": jax.nn.silu,
    }[act.name]


def _flax(module: nn.Module) -> LayerFn:
    return lambda params, x: module.apply({"params": params}, x)


def _flax_padding(padding) -> str | list[tuple[int, int]]:
    """'SAME' and 'VALID' (lax's 'SAME' is TensorFlow's), else the spec's (low, high) pairs."""
    return padding.upper() if isinstance(padding, str) else list(explicit_pads(padding))


def _conv(plan: LayerPlan, common: dict) -> LayerFn:
    layer = plan.layer
    window, strides = (layer.kernel, layer.kernel), (layer.stride, layer.stride)
    return _flax(nn.Conv(layer.filters, window, strides=strides, padding=_flax_padding(layer.padding), **common))


def _conv_transpose(plan: LayerPlan, common: dict) -> LayerFn:
    """Flax's ConvTranspose for 'same' and 'valid'. torch's whole-number padding p (and
    output_padding) is its unbiased 'VALID' output cropped by p and zero-extended where it
    runs out, then the bias (which torch adds to the extended rows too)."""
    layer = plan.layer
    window, strides = (layer.kernel, layer.kernel), (layer.stride, layer.stride)
    own = isinstance(layer.padding, str)
    padding = layer.padding.upper() if own else "VALID"
    module = nn.ConvTranspose(
        layer.filters, window, strides=strides, padding=padding, transpose_kernel=True, use_bias=own, **common
    )
    if own:
        return _flax(module)
    (r0, nr), (c0, nc) = (deconv_crop(n, layer) for n in plan.in_shape[:2])

    def cropped(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        y = module.apply({"params": {"kernel": params["kernel"]}}, x)[:, r0 : r0 + nr, c0 : c0 + nc]
        return jnp.pad(y, ((0, 0), (0, nr - y.shape[1]), (0, nc - y.shape[2]), (0, 0))) + params["bias"]

    return cropped


def _max_pool(plan: LayerPlan, common: dict) -> LayerFn:
    layer = plan.layer
    window, strides, padding = (layer.size, layer.size), (layer.step, layer.step), layer.padding.upper()
    return lambda params, x: nn.max_pool(x, window, strides=strides, padding=padding)


def _avg_pool(plan: LayerPlan, common: dict) -> LayerFn:
    layer = plan.layer
    window, strides, padding = (layer.size, layer.size), (layer.step, layer.step), layer.padding.upper()
    include = layer.count_include_pad is not False
    return lambda params, x: nn.avg_pool(x, window, strides=strides, padding=padding, count_include_pad=include)


def _upsample(plan: LayerPlan, common: dict) -> LayerFn:
    method = "nearest" if plan.layer.interpolation == "nearest" else "linear"
    return lambda params, x: jax.image.resize(x, (x.shape[0], *plan.out_shape), method=method)


class BatchNormFns:
    """Flax's nn.BatchNorm (momentum = 1 - the spec's, epsilon the spec's) as a pure evaluation
    function (use_running_average=True) and a training function (``train``: batch statistics,
    the ``batch_stats`` collection mutable). Canonical gamma, beta, running_mean, running_var are
    Flax's params scale, bias and batch_stats mean, var. Flax updates the running variance with
    the biased batch variance; ``unbiased`` rescales that update by hand."""

    def __init__(self, plan: LayerPlan, common: dict):
        layer = plan.layer
        self.layer, self.n_axes = layer, len(plan.in_shape)
        self.module = nn.BatchNorm(
            momentum=1.0 - layer.momentum,
            epsilon=layer.epsilon,
            dtype=common["dtype"],
            param_dtype=common["param_dtype"],
            use_fast_variance=False,
            force_float32_reductions=False,
        )

    @staticmethod
    def _variables(params: dict[str, jax.Array]) -> dict:
        return {
            "params": {"scale": params["gamma"], "bias": params["beta"]},
            "batch_stats": {"mean": params["running_mean"], "var": params["running_var"]},
        }

    def __call__(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return self.module.apply(self._variables(params), x, use_running_average=True)

    def train(
        self, params: dict[str, jax.Array], x: jax.Array, draw: Optional[jax.Array] = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        y, changed = self.module.apply(self._variables(params), x, use_running_average=False, mutable=["batch_stats"])
        stats = changed["batch_stats"]
        var = stats["var"]
        if self.layer.variance_update == "unbiased":
            axes = tuple(range(x.ndim - 1))
            n = x.size // x.shape[-1]
            var = params["running_var"] + self.layer.momentum * (
                jnp.var(x, axis=axes) * (n / (n - 1)) - params["running_var"]
            )
        return y, {"running_mean": stats["mean"], "running_var": var}


def _residual(plan: LayerPlan, common: dict) -> NestedFn:
    """The block's layers in order, plus its input or its projection."""
    n = len(plan.layer.layers)
    body, projection = plan.children[:n], plan.children[n:]

    def residual(apply: Apply, x: jax.Array) -> jax.Array:
        h = x
        for child in body:
            h = apply(child, h)
        return h + (apply(projection[0], x) if projection else x)

    return residual


class InjectedDropout(nn.Module):
    """Inverted dropout (kept values times 1 / (1 - rate), as nn.Dropout scales) whose mask
    comes from an injected uniform draw, a call argument: a value is kept where its draw is
    >= rate. nn.Dropout would draw its mask from the module's 'dropout' rng stream.
    ``deterministic`` (evaluation) is the identity."""

    rate: float

    @nn.compact
    def __call__(self, x: jax.Array, draw: Optional[jax.Array] = None, deterministic: bool = False) -> jax.Array:
        if deterministic:
            return x
        if draw is None:
            raise ValueError("a dropout layer runs in training mode without its injected draw")
        return jnp.where(draw >= self.rate, x / (1 - self.rate), jnp.zeros_like(x))


class DropoutFns:
    """InjectedDropout as a pure evaluation function (deterministic: the identity) and a
    training function (``train``: the draw's mask, no state)."""

    def __init__(self, plan: LayerPlan, common: dict):
        self.module = InjectedDropout(plan.layer.rate)

    def __call__(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return self.module.apply({}, x, deterministic=True)

    def train(
        self, params: dict[str, jax.Array], x: jax.Array, draw: Optional[jax.Array] = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self.module.apply({}, x, draw), {}


class VectorQuantizerFns:
    """Nearest-code quantization of the last axis, as aebench.layers.vector_quantizer states it:
    the distances ||z||^2 - 2 z.e + ||e||^2 added left to right (the matmul at the model's
    precision), jnp.argmin (the first index among equal distances, NumPy's rule), the output
    z + lax.stop_gradient(z_q - z). ``tapped`` (TapFn) also gives the taps (input, picked
    codes, indices, in the canonical (B, V, D) and (B, V) layouts) and, in training mode with
    ``update: ema``, the state: the moving averages and the codebook they give, from the stopped
    input, after the codes were picked (evaluation leaves the state alone)."""

    def __init__(self, plan: LayerPlan, common: dict):
        self.layer, self.precision = plan.layer, common["precision"]

    def __call__(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return self.tapped(params, x, False, None)[0]

    def tapped(
        self, params: dict[str, jax.Array], x: jax.Array, training: bool, draw: Optional[jax.Array]
    ) -> tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]]:
        codebook = params["embeddings"]
        d = codebook.shape[1]
        z = x.reshape(-1, d)
        cross = jnp.matmul(z, codebook.T, precision=self.precision)
        distances = (z * z).sum(axis=1, keepdims=True) - 2.0 * cross + (codebook * codebook).sum(axis=1)
        indices = jnp.argmin(distances, axis=1)
        codes = codebook[indices]
        out = z + jax.lax.stop_gradient(codes - z)
        per_example = (x.shape[0], -1, d)
        taps = {
            "input": z.reshape(per_example),
            "codes": codes.reshape(per_example),
            "indices": indices.reshape(x.shape[0], -1),
        }
        state = {}
        if training and self.layer.update == "ema":
            state = self.moving_averages(params, jax.lax.stop_gradient(z), indices)
        return out.reshape(x.shape), state, taps

    def moving_averages(self, params: dict[str, jax.Array], z: jax.Array, indices: jax.Array) -> dict[str, jax.Array]:
        """The moving averages after the batch's (N, D) vectors ``z`` picked ``indices``, and the codebook."""
        k, gamma, eps = self.layer.codes, self.layer.decay, self.layer.epsilon
        one_hot = jax.nn.one_hot(indices, k, dtype=z.dtype)
        cluster = gamma * params["cluster_size"] + (1 - gamma) * one_hot.sum(axis=0)
        embed = gamma * params["embedding_sum"] + (1 - gamma) * jnp.matmul(one_hot.T, z, precision=self.precision)
        n = cluster.sum()
        smoothed = (cluster + eps) / (n + k * eps) * n
        return {"embeddings": embed / smoothed[:, None], "cluster_size": cluster, "embedding_sum": embed}


BUILDERS: dict[str, Callable[[LayerPlan, dict], Union[LayerFn, NestedFn]]] = {
    "dense": lambda plan, common: _flax(nn.Dense(plan.layer.units, **common)),
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "flatten": lambda plan, common: lambda params, x: x.reshape(x.shape[0], -1),
    "reshape": lambda plan, common: lambda params, x: x.reshape(x.shape[0], *plan.layer.shape),
    "max_pool": _max_pool,
    "avg_pool": _avg_pool,
    "upsample": _upsample,
    "batch_norm": BatchNormFns,
    "residual": _residual,
    "dropout": DropoutFns,
    "vector_quantizer": VectorQuantizerFns,
}
"""Layer kind (aebench.layers) -> a pure function computing it before its activation, given
the Flax module settings (dtype, param_dtype, precision) every layer is built with. A builder
whose function has a ``train`` attribute (TrainFn) behaves differently in training mode; one
with a ``tapped`` attribute (TapFn) taps intermediates for the loss terms, in either mode; a
planned layer with children gets a NestedFn."""

TapFn = Callable[
    [dict[str, jax.Array], jax.Array, bool, Optional[jax.Array]],
    tuple[jax.Array, dict[str, jax.Array], dict[str, jax.Array]],
]
"""(this layer's parameters and state, input, training mode, its injected draw or None) ->
(output before the activation, its updated state in training mode (else empty), its taps by name)."""
Updates = dict[str, dict[str, jax.Array]]
"""Updated state by layer name, collected by a training-mode pass."""
Draws = Mapping[str, jax.Array]
"""The layers' injected draws of a training batch, by canonical layer name (Noise.draws)."""
NO_DRAWS: Draws = {}
Taps = dict[str, dict[str, jax.Array]]
"""The intermediates layers tap for the loss terms, by canonical layer name (a vector
quantizer's 'input', 'codes', 'indices': aebench.layers.vector_quantizer)."""


class Autoencoder:
    """Pure functions of (params, inputs): hidden, head, decode_logits. ``params`` holds every
    canonical weight, state included. They run in evaluation mode (running statistics, no
    dropout), or in training mode when given ``updates`` (a dict that receives each layer's
    updated state), with the layers' injected ``draws``."""

    def __init__(self, plan: ModelPlan, dtype: jnp.dtype):
        self.plan, self.dtype = plan, dtype
        common = dict(dtype=dtype, param_dtype=dtype, precision=applied_level())  # the process's, set at load
        self.ops = {p.name: BUILDERS[p.layer.type](p, common) for p in walk(plan.layers)}
        self.acts = {p.name: activation(getattr(p.layer, "activation", None)) for p in walk(plan.layers)}
        self.by_name = {p.name: p for p in plan.layers}

    def apply_layer(
        self,
        params: Params,
        plan: LayerPlan,
        x: jax.Array,
        updates: Optional[Updates] = None,
        draws: Draws = NO_DRAWS,
        taps: Optional[Taps] = None,
    ) -> jax.Array:
        op = self.ops[plan.name]
        if plan.children:
            y = cast(NestedFn, op)(lambda child, h: self.apply_layer(params, child, h, updates, draws, taps), x)
            return self.acts[plan.name](y)
        own, layer_fn = params.get(plan.name, {}), cast(LayerFn, op)
        train, tapped = getattr(op, "train", None), getattr(op, "tapped", None)
        if tapped is not None:
            y, state, found = cast(TapFn, tapped)(own, x, updates is not None, draws.get(plan.name))
            if state and updates is not None:
                updates[plan.name] = state
            if taps is not None:
                taps[plan.name] = found
        elif updates is not None and train is not None:
            y, state = train(own, x, draws.get(plan.name))
            if state:
                updates[plan.name] = state
        else:
            y = layer_fn(own, x)
        return self.acts[plan.name](y)

    def hidden(
        self,
        params: Params,
        x_in: jax.Array,
        labels: Optional[jax.Array],
        updates: Optional[Updates] = None,
        draws: Draws = NO_DRAWS,
    ) -> jax.Array:
        return self.run_stack(params, self.plan.encoder, _join(x_in, labels), updates, draws)

    def head(self, params: Params, name: str, h: jax.Array, updates: Optional[Updates] = None) -> jax.Array:
        return self.apply_layer(params, self.by_name[name], h, updates)

    def decode_logits(
        self,
        params: Params,
        z: jax.Array,
        labels: Optional[jax.Array],
        updates: Optional[Updates] = None,
        draws: Draws = NO_DRAWS,
        taps: Optional[Taps] = None,
    ) -> jax.Array:
        """The decoder's logits; the layers' taps go into ``taps`` when given."""
        return self.run_stack(params, self.plan.decoder, _join(z, labels), updates, draws, taps)

    def run_stack(
        self,
        params: Params,
        layers: tuple[LayerPlan, ...],
        h: jax.Array,
        updates: Optional[Updates],
        draws: Draws,
        taps: Optional[Taps] = None,
    ) -> jax.Array:
        """The layers in order (apply_layer)."""
        for plan in layers:
            h = self.apply_layer(params, plan, h, updates, draws, taps)
        return h


def _join(x: jax.Array, labels: Optional[jax.Array]) -> jax.Array:
    return x if labels is None else jnp.concatenate([x, labels], axis=1)
