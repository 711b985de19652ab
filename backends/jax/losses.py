"""Every loss term in JAX, from injected noise, reduced exactly as the spec says (the same
formulas as aebench.check.oracle). The contractive Jacobian is autodiff: vmap(jacrev(code))."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax

from aebench.layers.activations import Activation
from aebench.losses import present_terms
from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import NO_DRAWS, Autoencoder, Draws, Params, Updates, activation


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


@dataclass(frozen=True)
class Pass:
    """One forward pass: what the loss terms read."""

    model: Autoencoder
    spec: Spec
    params: Params
    x: jax.Array
    x_in: jax.Array
    labels: Optional[jax.Array]
    z: jax.Array
    mean: Optional[jax.Array]
    log_var: Optional[jax.Array]
    logits: jax.Array


def reconstruction(cfg: Any, p: Pass) -> jax.Array:
    if cfg.kind == "bce":
        per_element = optax.sigmoid_binary_cross_entropy(p.logits, p.x)
    else:
        per_element = (output(p.spec, p.logits) - p.x) ** 2
    return reduce(per_element, cfg.features, cfg.batch)


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


TERMS: dict[str, Callable[[Any, Pass], jax.Array]] = {
    "reconstruction": reconstruction,
    "kl": kl,
    "sparsity": sparsity,
    "contractive": contractive,
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
    mean = log_var = None
    if spec.model.family == "vae":
        mean, log_var = model.head(params, "z_mean", h, updates), model.head(params, "z_log_var", h, updates)
        z = mean + jnp.exp(0.5 * log_var) * eps
    else:
        z = model.head(params, "code", h, updates)
    logits = model.decode_logits(params, z, labels, updates, draws)
    p = Pass(model, spec, params, x, x_in, labels, z, mean, log_var, logits)
    return with_total(spec, {name: TERMS[name](getattr(spec.loss, name), p) for name in present_terms(spec.loss)})


def output(spec: Spec, logits: jax.Array) -> jax.Array:
    return activation(Activation(spec.model.output_activation))(logits)
