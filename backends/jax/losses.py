"""Every loss term in JAX, from injected noise, reduced exactly as the spec says (the same
formulas as aebench.check.oracle). The contractive Jacobian is autodiff: vmap(jacrev(code))."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from aebench.categorical import TEMPERATURE_KEY
from aebench.layers.activations import Activation
from aebench.losses import present_terms
from aebench.losses._minibatch_weighted import TERMS as DECOMPOSITION
from aebench.losses._quantizers import quantizers
from aebench.losses.base import draw_key
from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import NO_DRAWS, Autoencoder, Draws, Params, Taps, Updates, activation

LOG_2PI = math.log(2.0 * math.pi)


def corrupt(spec: Spec, x: jax.Array, noise: Optional[jax.Array]) -> jax.Array:
    c = spec.corruption
    if c is None:
        return x
    if isinstance(c, Gaussian):
        out = x + c.std * noise
        return out if c.clip is None else jnp.clip(out, *c.clip)
    if isinstance(c, Masking):
        return jnp.where(noise < c.fraction, jnp.zeros_like(x), x)
    half = c.fraction / 2
    return jnp.where(noise < half, jnp.zeros_like(x), jnp.where(noise >= 1 - half, jnp.ones_like(x), x))


def reduce(per_element: jax.Array, features: str, batch: str, samples: int = 1) -> jax.Array:
    """Over the features, each example's ``samples`` rows (the mean), then the batch (aebench.losses.base.reduce)."""
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(axis=1) if features == "sum" else flat.mean(axis=1)
    if samples > 1:
        per_example = per_example.reshape(-1, samples).mean(axis=1)
    return per_example.sum() if batch == "sum" else per_example.mean()


def repeat_rows(a: jax.Array, samples: int) -> jax.Array:
    """Each row ``samples`` times in a row, example-major (the rows of z and the logits)."""
    return a if samples == 1 else jnp.repeat(a, samples, axis=0)


def sample_posterior(mean: jax.Array, log_var: jax.Array, eps: jax.Array) -> jax.Array:
    """z from eps (B, latent), or from eps (B, k, latent) flattened example-major to (B k, latent)."""
    if eps.ndim == 2:
        return mean + jnp.exp(0.5 * log_var) * eps
    return (mean[:, None] + jnp.exp(0.5 * log_var)[:, None] * eps).reshape(-1, mean.shape[1])


@dataclass(frozen=True)
class Pass:
    """One forward pass: what the loss terms read."""

    model: Autoencoder
    spec: Spec
    params: Params
    x: jax.Array
    """The reconstruction target: the clean x, each row ``samples`` times (the rows of z and logits)."""
    x_in: jax.Array
    """The encoder's input, one row per example (labels, mean and log_var too)."""
    labels: Optional[jax.Array]
    z: jax.Array
    """The code (family ae) or each example's ``samples`` posterior samples, example-major."""
    mean: Optional[jax.Array]
    log_var: Optional[jax.Array]
    logits: jax.Array
    draws: Draws
    """The batch's injected draws: the loss terms' under aebench.losses.base.draw_key."""
    samples: int
    """k = model.latent.samples: rows of z, logits and x per example."""
    taps: Taps
    """The intermediates the layers tapped, by canonical layer name (model.Taps)."""
    category_logits: Optional[jax.Array] = None
    """Family categorical: the posterior's logits, (B, N K)."""


def reconstruction(cfg: Any, p: Pass) -> jax.Array:
    if cfg.kind == "bce":
        per_element = optax.sigmoid_binary_cross_entropy(p.logits, p.x)
    else:
        per_element = (output(p.spec, p.logits) - p.x) ** 2
    return reduce(per_element, cfg.features, cfg.batch, p.samples)


def kl(cfg: Any, p: Pass) -> jax.Array:
    mean, log_var = p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    return reduce(0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var), cfg.features, cfg.batch)


def sparsity(cfg: Any, p: Pass) -> jax.Array:
    rho, rho_hat = cfg.rho, p.z.mean(axis=0)
    divergence = rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat))
    return divergence.sum() if cfg.units == "sum" else divergence.mean()


def contractive(cfg: Any, p: Pass) -> jax.Array:
    """||d code / d x||_F^2 per example by autodiff (vmap of jacrev), reduced over the batch."""
    model, params, labels = p.model, p.params, p.labels

    def code(xi: jax.Array, li: Optional[jax.Array]) -> jax.Array:
        lab = None if li is None else li[None]
        return model.head(params, "code", model.hidden(params, xi[None], lab))[0]

    jac = jax.vmap(jax.jacrev(code), in_axes=(0, None if labels is None else 0))(p.x_in, labels)
    return reduce(jac**2, "sum", cfg.batch)


def minibatch_weighted(p: Pass, dataset_size: int) -> dict[str, jax.Array]:
    """beta-TCVAE's decomposition per example (aebench.losses._minibatch_weighted states it)."""
    z, mean, log_var = p.z, p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    log_nm = math.log(float(dataset_size) * z.shape[0])
    density = -0.5 * (LOG_2PI + log_var[None] + (z[:, None] - mean[None]) ** 2 * jnp.exp(-log_var[None]))
    joint = density.sum(axis=2)
    log_q_z = jax.nn.logsumexp(joint, axis=1) - log_nm
    log_prod = (jax.nn.logsumexp(density, axis=1) - log_nm).sum(axis=1)
    log_p = (-0.5 * (LOG_2PI + z**2)).sum(axis=1)
    return {
        "mutual_information": jnp.diagonal(joint) - log_q_z,
        "total_correlation": log_q_z - log_prod,
        "dimension_kl": log_prod - log_p,
    }


def kernel_matrix(cfg: Any, a: jax.Array, b: jax.Array) -> jax.Array:
    """k(a_i, b_j) for every pair: aebench.losses.mmd states the kernel and the distance."""
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    base = 2.0 * a.shape[1] * cfg.bandwidth**2
    total: Optional[jax.Array] = None
    for scale in cfg.scales:
        c = base * scale
        k = c / (c + squared) if cfg.kernel == "imq" else jnp.exp(-squared / c)
        total = k if total is None else total + k
    assert total is not None, "a spec's scales are never empty"
    return total


def mmd(cfg: Any, p: Pass) -> jax.Array:
    z, prior = p.z, p.draws[draw_key("mmd", "prior")]
    n = z.shape[0]
    off_diagonal = 1.0 - jnp.eye(n, dtype=z.dtype)
    within = ((kernel_matrix(cfg, z, z) + kernel_matrix(cfg, prior, prior)) * off_diagonal).sum() / (n * (n - 1))
    return within - 2.0 * kernel_matrix(cfg, z, prior).sum() / n**2


def sorted_over_batch(x: jax.Array) -> jax.Array:
    """Each column sorted ascending by a stable sort (ties keep the batch's order)."""
    return jnp.sort(x, axis=0, stable=True)


def sliced_wasserstein(cfg: Any, p: Pass) -> jax.Array:
    prior = p.draws[draw_key("sliced_wasserstein", "prior")]
    directions = p.draws[draw_key("sliced_wasserstein", "projections")]
    gap = sorted_over_batch(p.z @ directions.T) - sorted_over_batch(prior @ directions.T)
    return (jnp.abs(gap) ** cfg.power).mean()


def decomposition_term(name: str) -> Callable[[Any, Pass], jax.Array]:
    return lambda cfg, p: minibatch_weighted(p, cfg.dataset_size)[name].mean()


def iwae(cfg: Any, p: Pass) -> jax.Array:
    """The negative importance-weighted bound (aebench.losses.iwae states it)."""
    mean, log_var = p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    examples, latent = mean.shape
    if cfg.likelihood == "bernoulli":
        per_element = -optax.sigmoid_binary_cross_entropy(p.logits, p.x)
    else:
        per_element = -((p.x - output(p.spec, p.logits)) ** 2) / (2.0 * cfg.variance)
    log_px = per_element.reshape(p.logits.shape[0], -1).sum(axis=1)
    if cfg.likelihood == "gaussian":
        log_px = log_px - 0.5 * math.prod(p.x.shape[1:]) * math.log(2.0 * math.pi * cfg.variance)
    zs, lv = p.z.reshape(examples, p.samples, latent), log_var[:, None]
    log_prior_ratio = 0.5 * (lv + (zs - mean[:, None]) ** 2 * jnp.exp(-lv) - zs**2).sum(axis=2)
    log_w = log_px.reshape(examples, p.samples) + log_prior_ratio
    return -(jax.nn.logsumexp(log_w, axis=1) - math.log(p.samples)).mean()


def categorical_kl(cfg: Any, p: Pass) -> jax.Array:
    """sum_k q (log q + log K) per variable, log q by log_softmax (aebench.losses.categorical_kl)."""
    assert p.category_logits is not None, "family categorical has a categorical posterior"
    k = p.spec.model.latent.categories
    log_q = jax.nn.log_softmax(p.category_logits.reshape(p.category_logits.shape[0], -1, k), axis=-1)
    return reduce((jnp.exp(log_q) * (log_q + math.log(k))).sum(axis=-1), cfg.features, cfg.batch)


def gumbel_softmax(spec: Spec, category_logits: jax.Array, gumbel: jax.Array, temperature: jax.Array) -> jax.Array:
    """Family categorical's z: softmax((logits + g) / tau) per variable, straight through
    (y + stop_gradient(one_hot(y) - y), jnp.argmax: the first of tied maxima) where ``hard``
    (aebench.categorical states it)."""
    latent = spec.model.latent
    shape = (category_logits.shape[0], -1, latent.categories)
    y = jax.nn.softmax((category_logits.reshape(shape) + gumbel.reshape(shape)) / temperature, axis=-1)
    if latent.hard:
        y = y + jax.lax.stop_gradient(jax.nn.one_hot(jnp.argmax(y, axis=-1), latent.categories, dtype=y.dtype) - y)
    return y.reshape(category_logits.shape[0], -1)


def quantized(held: str) -> Callable[[Any, Pass], jax.Array]:
    """The codebook (``held`` 'input') or commitment (``held`` 'codes') term: the sum over the
    quantizers of reduce((z_e - z_q)^2), ``held`` under lax.stop_gradient (aebench.losses._quantizers)."""

    def term(cfg: Any, p: Pass) -> jax.Array:
        parts = []
        for layer in quantizers(p.model.plan.layers):
            taps = dict(p.taps[layer.name])
            taps[held] = jax.lax.stop_gradient(taps[held])
            parts.append(reduce((taps["input"] - taps["codes"]) ** 2, cfg.features, cfg.batch))
        total = parts[0]
        for part in parts[1:]:
            total = total + part
        return total

    return term


TERMS: dict[str, Callable[[Any, Pass], jax.Array]] = {
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
    model: Autoencoder,
    spec: Spec,
    params: Params,
    x: jax.Array,
    labels: Optional[jax.Array],
    eps: Optional[jax.Array],
    corruption: Optional[jax.Array],
    draws: Draws = NO_DRAWS,
    updates: Optional[Updates] = None,
    training: bool = True,
) -> dict[str, jax.Array]:
    """Unweighted terms and their weighted 'total', in training mode (batch statistics, the
    layers' injected ``draws``; the updated state goes into ``updates`` when given, else it is
    dropped) or, ``training=False``, in evaluation mode (running statistics, no dropout)."""
    updates = None if not training else {} if updates is None else updates
    x_in = corrupt(spec, x, corruption)
    h = model.hidden(params, x_in, labels, updates, draws)
    mean = log_var = category_logits = None
    samples = spec.model.latent.samples
    if spec.model.family == "vae":
        mean, log_var = model.head(params, "z_mean", h, updates), model.head(params, "z_log_var", h, updates)
        assert eps is not None, "family vae gets its reparameterisation noise"
        z = sample_posterior(mean, log_var, eps)
    elif spec.model.family == "categorical":
        category_logits = model.head(params, "logits", h, updates)
        z = gumbel_softmax(spec, category_logits, eps, draws[TEMPERATURE_KEY])
    else:
        z = model.head(params, "code", h, updates)
    decoder_labels = None if labels is None else repeat_rows(labels, samples)
    taps: Taps = {}
    logits = model.decode_logits(params, z, decoder_labels, updates, draws, taps)
    x_rows = repeat_rows(x, samples)
    p = Pass(model, spec, params, x_rows, x_in, labels, z, mean, log_var, logits, draws, samples, taps, category_logits)
    return with_total(spec, {name: TERMS[name](getattr(spec.loss, name), p) for name in present_terms(spec.loss)})


def output(spec: Spec, logits: jax.Array) -> jax.Array:
    return activation(Activation(spec.model.output_activation))(logits)
