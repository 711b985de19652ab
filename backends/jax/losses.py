"""Every loss term in JAX, from injected noise, reduced exactly as the spec says (the same
formulas as aebench.check.oracle). The contractive Jacobian is autodiff: vmap(jacrev(code))."""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import Autoencoder, Params


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


def reduce(per_element: jax.Array, features: str, batch: str) -> jax.Array:
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(axis=1) if features == "sum" else flat.mean(axis=1)
    return per_example.sum() if batch == "sum" else per_example.mean()


def reconstruction(spec: Spec, logits: jax.Array, x: jax.Array) -> jax.Array:
    cfg = spec.loss.reconstruction
    if cfg.kind == "bce":
        per_element = optax.sigmoid_binary_cross_entropy(logits, x)
    else:
        out = jax.nn.sigmoid(logits) if spec.model.output_activation == "sigmoid" else logits
        per_element = (out - x) ** 2
    return reduce(per_element, cfg.features, cfg.batch)


def contractive(
    model: Autoencoder, params: Params, x_in: jax.Array, labels: Optional[jax.Array], batch: str
) -> jax.Array:
    def code(xi: jax.Array, li: Optional[jax.Array]) -> jax.Array:
        lab = None if li is None else li[None]
        return model.head(params, "code", model.hidden(params, xi[None], lab))[0]

    jac = jax.vmap(jax.jacrev(code), in_axes=(0, None if labels is None else 0))(x_in, labels)
    return reduce(jac**2, "sum", batch)


def loss_terms(
    model: Autoencoder,
    spec: Spec,
    params: Params,
    x: jax.Array,
    labels: Optional[jax.Array],
    eps: Optional[jax.Array],
    corruption: Optional[jax.Array],
) -> dict[str, jax.Array]:
    """Unweighted terms and their weighted 'total'."""
    loss = spec.loss
    x_in = corrupt(spec, x, corruption)
    h = model.hidden(params, x_in, labels)
    terms = {}
    if spec.model.family == "vae":
        mean, log_var = model.head(params, "z_mean", h), model.head(params, "z_log_var", h)
        z = mean + jnp.exp(0.5 * log_var) * eps
        terms["kl"] = reduce(0.5 * (jnp.exp(log_var) + mean**2 - 1.0 - log_var), loss.kl.features, loss.kl.batch)
    else:
        z = model.head(params, "code", h)
    terms["reconstruction"] = reconstruction(spec, model.decode_logits(params, z, labels), x)
    if loss.sparsity is not None:
        rho, rho_hat = loss.sparsity.rho, z.mean(axis=0)
        kl = rho * jnp.log(rho / rho_hat) + (1 - rho) * jnp.log((1 - rho) / (1 - rho_hat))
        terms["sparsity"] = kl.sum() if loss.sparsity.units == "sum" else kl.mean()
    if loss.contractive is not None:
        terms["contractive"] = contractive(model, params, x_in, labels, loss.contractive.batch)
    return with_total(spec, terms)


def output(spec: Spec, logits: jax.Array) -> jax.Array:
    return jax.nn.sigmoid(logits) if spec.model.output_activation == "sigmoid" else logits
