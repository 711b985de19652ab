"""Every loss term in keras.ops (the same code on every engine), from injected noise,
reduced exactly as the spec says. BCE is keras.ops.binary_crossentropy(from_logits=True):
with probabilities Keras would clip them on its JAX and torch engines but not on
TensorFlow's (docs/EQUIVALENCE.md, 'Losses').

The contractive Jacobian is the chain rule through the dense encoder in keras.ops (Keras 3
has no engine-neutral jacobian); its gradient is still autodiff. It is checked against the
oracle as the other backends' autodiff Jacobians are (docs/EQUIVALENCE.md, 'The contractive penalty').
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

from keras import ops

from aebench.categorical import TEMPERATURE_KEY
from aebench.layers.activations import Activation
from aebench.losses import present_terms
from aebench.losses._minibatch_weighted import TERMS as DECOMPOSITION
from aebench.losses._quantizers import quantizers
from aebench.losses.base import draw_key
from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import NO_DRAWS, Autoencoder, Draws, Taps, activate, activation_slope

LOG_2PI = math.log(2.0 * math.pi)


def corrupt(spec: Spec, x, noise):
    c = spec.corruption
    if c is None:
        return x
    if isinstance(c, Gaussian):
        out = x + c.std * noise
        return out if c.clip is None else ops.clip(out, c.clip[0], c.clip[1])
    if isinstance(c, Masking):
        return ops.where(noise < c.fraction, ops.zeros_like(x), x)
    half = c.fraction / 2
    return ops.where(noise < half, ops.zeros_like(x), ops.where(noise >= 1 - half, ops.ones_like(x), x))


def exact_mean(x, axis=None):
    """sum / count: keras.ops.mean on the JAX engine (Keras 3.15) accumulates float64 in float32."""
    count = x.shape[axis] if axis is not None else math.prod(x.shape)
    return ops.sum(x, axis=axis) / float(count)


def reduce(per_element, features: str, batch: str, samples: int = 1):
    """Over the features, each example's ``samples`` rows (the mean), then the batch (aebench.losses.base.reduce)."""
    flat = ops.reshape(per_element, (ops.shape(per_element)[0], -1))
    per_example = ops.sum(flat, axis=1) if features == "sum" else exact_mean(flat, axis=1)
    if samples > 1:
        per_example = exact_mean(ops.reshape(per_example, (-1, samples)), axis=1)
    return ops.sum(per_example) if batch == "sum" else exact_mean(per_example)


def repeat_rows(a, samples: int):
    """Each row ``samples`` times in a row, example-major (the rows of z and the logits)."""
    return a if samples == 1 else ops.repeat(a, samples, axis=0)


def sample_posterior(mean, log_var, eps):
    """z from eps (B, latent), or from eps (B, k, latent) flattened example-major to (B k, latent)."""
    if len(eps.shape) == 2:
        return mean + ops.exp(0.5 * log_var) * eps
    z = ops.expand_dims(mean, 1) + ops.expand_dims(ops.exp(0.5 * log_var), 1) * eps
    return ops.reshape(z, (-1, mean.shape[1]))


@dataclass(frozen=True)
class Pass:
    """One forward pass: what the loss terms read (Keras tensors of the engine)."""

    model: Autoencoder
    spec: Spec
    x: Any
    """The reconstruction target: the clean x, each row ``samples`` times (the rows of z and logits)."""
    x_in: Any
    """The encoder's input, one row per example (labels, mean and log_var too)."""
    labels: Any
    z: Any
    """The code (family ae) or each example's ``samples`` posterior samples, example-major."""
    mean: Any
    log_var: Any
    logits: Any
    draws: Draws
    """The batch's injected draws: the loss terms' under aebench.losses.base.draw_key."""
    samples: int
    """k = model.latent.samples: rows of z, logits and x per example."""
    taps: Taps
    """The intermediates the layers tapped, by canonical layer name (model.Taps)."""
    category_logits: Any = None
    """Family categorical: the posterior's logits, (B, N K)."""


def reconstruction(cfg: Any, p: Pass):
    if cfg.kind == "bce":
        per_element = ops.binary_crossentropy(p.x, p.logits, from_logits=True)
    else:
        per_element = ops.square(output(p.spec, p.logits) - p.x)
    return reduce(per_element, cfg.features, cfg.batch, p.samples)


def kl(cfg: Any, p: Pass):
    mean, log_var = p.mean, p.log_var
    return reduce(0.5 * (ops.exp(log_var) + ops.square(mean) - 1.0 - log_var), cfg.features, cfg.batch)


def sparsity(cfg: Any, p: Pass):
    rho, rho_hat = cfg.rho, exact_mean(p.z, axis=0)
    divergence = rho * ops.log(rho / rho_hat) + (1 - rho) * ops.log((1 - rho) / (1 - rho_hat))
    return ops.sum(divergence) if cfg.units == "sum" else exact_mean(divergence)


def contractive(cfg: Any, p: Pass):
    return reduce(ops.square(code_jacobian(p.model, p.x_in, p.labels)), "sum", cfg.batch)


def code_jacobian(model: Autoencoder, x_in, labels: Optional[object]):
    """d code / d x through the dense encoder: J <- (J @ W) * act'(pre), shape (B, in, code)."""
    h = x_in if labels is None else ops.concatenate([x_in, labels], axis=1)
    n_in = ops.shape(x_in)[1]
    jac = None
    for plan in model.plan.encoder + model.plan.heads:
        kernel = model.layers[plan.name].kernel
        pre = model.layers[plan.name](h)
        slope = ops.expand_dims(activation_slope(plan.layer.activation, pre), 1)
        jac = (ops.expand_dims(kernel[:n_in], 0) if jac is None else ops.matmul(jac, kernel)) * slope
        h = activate(plan.layer.activation, pre)
    return jac


def minibatch_weighted(p: Pass, dataset_size: int) -> dict[str, Any]:
    """beta-TCVAE's decomposition per example (aebench.losses._minibatch_weighted states it)."""
    z, mean, log_var = p.z, p.mean, p.log_var
    log_nm = math.log(float(dataset_size) * z.shape[0])
    rows, cols = ops.expand_dims(z, 1), ops.expand_dims(mean, 0)
    spread = ops.expand_dims(log_var, 0)
    density = -0.5 * (LOG_2PI + spread + ops.square(rows - cols) * ops.exp(-spread))
    joint = ops.sum(density, axis=2)
    log_q_z = ops.logsumexp(joint, axis=1) - log_nm
    log_prod = ops.sum(ops.logsumexp(density, axis=1) - log_nm, axis=1)
    log_p = ops.sum(-0.5 * (LOG_2PI + ops.square(z)), axis=1)
    return {
        "mutual_information": ops.diagonal(joint) - log_q_z,
        "total_correlation": log_q_z - log_prod,
        "dimension_kl": log_prod - log_p,
    }


def kernel_matrix(cfg: Any, a, b):
    """k(a_i, b_j) for every pair: aebench.losses.mmd states the kernel and the distance."""
    squared = ops.sum(ops.square(ops.expand_dims(a, 1) - ops.expand_dims(b, 0)), axis=2)
    base = 2.0 * a.shape[1] * cfg.bandwidth**2
    total = None
    for scale in cfg.scales:
        c = base * scale
        k = c / (c + squared) if cfg.kernel == "imq" else ops.exp(-squared / c)
        total = k if total is None else total + k
    return total


def mmd(cfg: Any, p: Pass):
    z, prior = p.z, p.draws[draw_key("mmd", "prior")]
    n = z.shape[0]
    off_diagonal = 1.0 - ops.eye(n, dtype=z.dtype)
    within = ops.sum((kernel_matrix(cfg, z, z) + kernel_matrix(cfg, prior, prior)) * off_diagonal) / (n * (n - 1))
    return within - 2.0 * ops.sum(kernel_matrix(cfg, z, prior)) / n**2


def sorted_over_batch(x):
    """Each column sorted ascending by a stable argsort and a gather: keras.ops.sort on the torch
    engine is torch.sort without stable=True (docs/EQUIVALENCE.md, "The zoo's loss terms")."""
    return ops.take_along_axis(x, ops.argsort(x, axis=0), axis=0)


def sliced_wasserstein(cfg: Any, p: Pass):
    prior = p.draws[draw_key("sliced_wasserstein", "prior")]
    directions = ops.transpose(p.draws[draw_key("sliced_wasserstein", "projections")])
    gap = sorted_over_batch(ops.matmul(p.z, directions)) - sorted_over_batch(ops.matmul(prior, directions))
    return exact_mean(ops.power(ops.abs(gap), cfg.power))


def decomposition_term(name: str) -> Callable[[Any, Pass], Any]:
    return lambda cfg, p: exact_mean(minibatch_weighted(p, cfg.dataset_size)[name])


def iwae(cfg: Any, p: Pass):
    """The negative importance-weighted bound (aebench.losses.iwae states it)."""
    mean, log_var, latent = p.mean, p.log_var, p.mean.shape[1]
    if cfg.likelihood == "bernoulli":
        per_element = -ops.binary_crossentropy(p.x, p.logits, from_logits=True)
    else:
        per_element = -ops.square(p.x - output(p.spec, p.logits)) / (2.0 * cfg.variance)
    log_px = ops.sum(ops.reshape(per_element, (ops.shape(per_element)[0], -1)), axis=1)
    if cfg.likelihood == "gaussian":
        log_px = log_px - 0.5 * math.prod(p.x.shape[1:]) * math.log(2.0 * math.pi * cfg.variance)
    zs, lv = ops.reshape(p.z, (-1, p.samples, latent)), ops.expand_dims(log_var, 1)
    spread = ops.square(zs - ops.expand_dims(mean, 1)) * ops.exp(-lv)
    log_prior_ratio = 0.5 * ops.sum(lv + spread - ops.square(zs), axis=2)
    log_w = ops.reshape(log_px, (-1, p.samples)) + log_prior_ratio
    return -exact_mean(ops.logsumexp(log_w, axis=1) - math.log(p.samples))


def categorical_kl(cfg: Any, p: Pass):
    """sum_k q (log q + log K) per variable, log q by log_softmax (aebench.losses.categorical_kl)."""
    k = p.spec.model.latent.categories
    log_q = ops.log_softmax(ops.reshape(p.category_logits, (p.category_logits.shape[0], -1, k)), axis=-1)
    return reduce(ops.sum(ops.exp(log_q) * (log_q + math.log(k)), axis=-1), cfg.features, cfg.batch)


def gumbel_softmax(spec: Spec, category_logits, gumbel, temperature):
    """Family categorical's z: softmax((logits + g) / tau) per variable, straight through
    (y + stop_gradient(one_hot(y) - y), keras.ops.argmax: the first of tied maxima; it is taken
    of y >= +0 only, since on the TensorFlow and JAX engines it ranks -0.0 below +0.0) where
    ``hard`` (aebench.categorical states it)."""
    latent = spec.model.latent
    shape = (category_logits.shape[0], -1, latent.categories)
    y = ops.softmax((ops.reshape(category_logits, shape) + ops.reshape(gumbel, shape)) / temperature, axis=-1)
    if latent.hard:
        y = y + ops.stop_gradient(ops.one_hot(ops.argmax(y, axis=-1), latent.categories, dtype=y.dtype) - y)
    return ops.reshape(y, (category_logits.shape[0], -1))


def quantized(held: str) -> Callable[[Any, Pass], Any]:
    """The codebook (``held`` 'input') or commitment (``held`` 'codes') term: the sum over the
    quantizers of reduce((z_e - z_q)^2), ``held`` under ops.stop_gradient (aebench.losses._quantizers)."""

    def term(cfg: Any, p: Pass):
        total = None
        for layer in quantizers(p.model.plan.layers):
            taps: dict[str, Any] = dict(p.taps[layer.name])
            taps[held] = ops.stop_gradient(taps[held])
            part = reduce(ops.square(taps["input"] - taps["codes"]), cfg.features, cfg.batch)
            total = part if total is None else total + part
        return total

    return term


TERMS: dict[str, Callable[[Any, Pass], Any]] = {
    "reconstruction": reconstruction,
    "kl": kl,
    "sparsity": sparsity,
    "contractive": contractive,
    **{name: decomposition_term(name) for name in DECOMPOSITION},
    "mmd": mmd,
    "sliced_wasserstein": sliced_wasserstein,
    "iwae": iwae,
    "codebook": quantized("input"),
    "commitment": quantized("codes"),
    "categorical_kl": categorical_kl,
}
"""Loss term (aebench.losses) -> its unweighted value from the term's settings and the pass."""


def loss_terms(
    model: Autoencoder, spec: Spec, x, labels, eps, corruption, draws: Draws = NO_DRAWS, training: bool = True
) -> dict:
    """Unweighted terms and their weighted 'total', in training mode (batch statistics, the
    layers' injected ``draws``; the layers assign their updated running statistics, which the
    caller puts back if it must) or in evaluation mode (running statistics, no dropout)."""
    x_in = corrupt(spec, x, corruption)
    h = model.hidden(x_in, labels, training, draws)
    mean = log_var = category_logits = None
    samples = spec.model.latent.samples
    if spec.model.family == "vae":
        mean, log_var = model.head("z_mean", h, training), model.head("z_log_var", h, training)
        z = sample_posterior(mean, log_var, eps)
    elif spec.model.family == "categorical":
        category_logits = model.head("logits", h, training)
        z = gumbel_softmax(spec, category_logits, eps, draws[TEMPERATURE_KEY])
    else:
        z = model.head("code", h, training)
    taps: Taps = {}
    logits = model.decode_logits(z, None if labels is None else repeat_rows(labels, samples), training, draws, taps)
    x_rows = repeat_rows(x, samples)
    p = Pass(model, spec, x_rows, x_in, labels, z, mean, log_var, logits, draws, samples, taps, category_logits)
    return with_total(spec, {name: TERMS[name](getattr(spec.loss, name), p) for name in present_terms(spec.loss)})


def output(spec: Spec, logits):
    return activate(Activation(spec.model.output_activation), logits)
