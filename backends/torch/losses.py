"""Every loss term in torch, from injected noise, reduced exactly as the spec says.

Same formulas as the oracle (aebench.check.oracle); the contractive Jacobian is autodiff
(vmap of jacrev over the code), so the closed form is a check, not an assumption.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacrev, vmap

from aebench.categorical import TEMPERATURE_KEY
from aebench.layers.activations import Activation
from aebench.losses import present_terms
from aebench.losses._minibatch_weighted import TERMS as DECOMPOSITION
from aebench.losses._quantizers import quantizers
from aebench.losses.base import draw_key
from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import NO_DRAWS, Autoencoder, Draws, Taps, activation

LOG_2PI = math.log(2.0 * math.pi)


def corrupt(spec: Spec, x: Tensor, noise: Optional[Tensor]) -> Tensor:
    c = spec.corruption
    if c is None:
        return x
    if isinstance(c, Gaussian):
        out = x + c.std * noise
        return out if c.clip is None else out.clamp(*c.clip)
    zeros = torch.zeros_like(x)
    if isinstance(c, Masking):
        return torch.where(noise < c.fraction, zeros, x)
    half = c.fraction / 2
    return torch.where(noise < half, zeros, torch.where(noise >= 1 - half, torch.ones_like(x), x))


def reduce(per_element: Tensor, features: str, batch: str, samples: int = 1) -> Tensor:
    """Over the features, each example's ``samples`` rows (the mean), then the batch (aebench.losses.base.reduce)."""
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(dim=1) if features == "sum" else flat.mean(dim=1)
    if samples > 1:
        per_example = per_example.reshape(-1, samples).mean(dim=1)
    return per_example.sum() if batch == "sum" else per_example.mean()


def repeat_rows(a: Tensor, samples: int) -> Tensor:
    """Each row ``samples`` times in a row, example-major (the rows of z and the logits)."""
    return a if samples == 1 else torch.repeat_interleave(a, samples, dim=0)


def sample_posterior(mean: Tensor, log_var: Tensor, eps: Tensor) -> Tensor:
    """z from eps (B, latent), or from eps (B, k, latent) flattened example-major to (B k, latent)."""
    if eps.dim() == 2:
        return mean + torch.exp(0.5 * log_var) * eps
    return (mean[:, None] + torch.exp(0.5 * log_var)[:, None] * eps).reshape(-1, mean.shape[1])


@dataclass(frozen=True)
class Pass:
    """One forward pass: what the loss terms read."""

    model: Autoencoder
    spec: Spec
    x: Tensor
    """The reconstruction target: the clean x, each row ``samples`` times (the rows of z and logits)."""
    x_in: Tensor
    """The encoder's input, one row per example (labels, mean and log_var too)."""
    labels: Optional[Tensor]
    z: Tensor
    """The code (family ae) or each example's ``samples`` posterior samples, example-major."""
    mean: Optional[Tensor]
    log_var: Optional[Tensor]
    logits: Tensor
    draws: Draws
    """The batch's injected draws: the loss terms' under aebench.losses.base.draw_key."""
    samples: int
    """k = model.latent.samples: rows of z, logits and x per example."""
    taps: Taps
    """The intermediates the layers tapped, by canonical layer name (Taps)."""
    category_logits: Optional[Tensor] = None
    """Family categorical: the posterior's logits, (B, N K)."""


def reconstruction(cfg: Any, p: Pass) -> Tensor:
    if cfg.kind == "bce":
        per_element = F.binary_cross_entropy_with_logits(p.logits, p.x, reduction="none")
    else:
        per_element = (output(p.spec, p.logits) - p.x) ** 2
    return reduce(per_element, cfg.features, cfg.batch, p.samples)


def kl(cfg: Any, p: Pass) -> Tensor:
    mean, log_var = p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    return reduce(0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var), cfg.features, cfg.batch)


def sparsity(cfg: Any, p: Pass) -> Tensor:
    rho, rho_hat = cfg.rho, p.z.mean(dim=0)
    divergence = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
    return divergence.sum() if cfg.units == "sum" else divergence.mean()


def contractive(cfg: Any, p: Pass) -> Tensor:
    """||d code / d x||_F^2 per example by autodiff, reduced over the batch."""
    model, labels = p.model, p.labels

    def code(xi: Tensor, li: Optional[Tensor]) -> Tensor:
        row = xi[None]
        lab = None if li is None else li[None]
        return model.head("code", model.hidden(row, lab))[0]

    jac = vmap(jacrev(code), in_dims=(0, None if labels is None else 0))(p.x_in, labels)
    return reduce(jac**2, "sum", cfg.batch)


def minibatch_weighted(p: Pass, dataset_size: int) -> dict[str, Tensor]:
    """beta-TCVAE's decomposition per example (aebench.losses._minibatch_weighted states it)."""
    z, mean, log_var = p.z, p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    log_nm = math.log(float(dataset_size) * z.shape[0])
    density = -0.5 * (LOG_2PI + log_var[None] + (z[:, None] - mean[None]) ** 2 * torch.exp(-log_var[None]))
    joint = density.sum(dim=2)
    log_q_z = torch.logsumexp(joint, dim=1) - log_nm
    log_prod = (torch.logsumexp(density, dim=1) - log_nm).sum(dim=1)
    log_p = (-0.5 * (LOG_2PI + z**2)).sum(dim=1)
    return {
        "mutual_information": torch.diagonal(joint) - log_q_z,
        "total_correlation": log_q_z - log_prod,
        "dimension_kl": log_prod - log_p,
    }


def kernel_matrix(cfg: Any, a: Tensor, b: Tensor) -> Tensor:
    """k(a_i, b_j) for every pair: aebench.losses.mmd states the kernel and the distance."""
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(dim=2)
    base = 2.0 * a.shape[1] * cfg.bandwidth**2
    total: Optional[Tensor] = None
    for scale in cfg.scales:
        c = base * scale
        k = c / (c + squared) if cfg.kernel == "imq" else torch.exp(-squared / c)
        total = k if total is None else total + k
    assert total is not None, "a spec's scales are never empty"
    return total


def mmd(cfg: Any, p: Pass) -> Tensor:
    z, prior = p.z, p.draws[draw_key("mmd", "prior")]
    n = z.shape[0]
    off_diagonal = 1.0 - torch.eye(n, dtype=z.dtype, device=z.device)
    within = ((kernel_matrix(cfg, z, z) + kernel_matrix(cfg, prior, prior)) * off_diagonal).sum() / (n * (n - 1))
    return within - 2.0 * kernel_matrix(cfg, z, prior).sum() / n**2


def sorted_over_batch(x: Tensor) -> Tensor:
    """Each column sorted ascending by a stable sort (ties keep the batch's order)."""
    return torch.sort(x, dim=0, stable=True).values


def sliced_wasserstein(cfg: Any, p: Pass) -> Tensor:
    prior = p.draws[draw_key("sliced_wasserstein", "prior")]
    directions = p.draws[draw_key("sliced_wasserstein", "projections")]
    gap = sorted_over_batch(p.z @ directions.T) - sorted_over_batch(prior @ directions.T)
    return (gap.abs() ** cfg.power).mean()


def decomposition_term(name: str) -> Callable[[Any, Pass], Tensor]:
    return lambda cfg, p: minibatch_weighted(p, cfg.dataset_size)[name].mean()


def iwae(cfg: Any, p: Pass) -> Tensor:
    """The negative importance-weighted bound (aebench.losses.iwae states it)."""
    mean, log_var = p.mean, p.log_var
    assert mean is not None and log_var is not None, "family vae has a posterior"
    examples, latent = mean.shape
    if cfg.likelihood == "bernoulli":
        per_element = -F.binary_cross_entropy_with_logits(p.logits, p.x, reduction="none")
    else:
        per_element = -((p.x - output(p.spec, p.logits)) ** 2) / (2.0 * cfg.variance)
    log_px = per_element.reshape(p.logits.shape[0], -1).sum(dim=1)
    if cfg.likelihood == "gaussian":
        log_px = log_px - 0.5 * math.prod(p.x.shape[1:]) * math.log(2.0 * math.pi * cfg.variance)
    zs, lv = p.z.reshape(examples, p.samples, latent), log_var[:, None]
    log_prior_ratio = 0.5 * (lv + (zs - mean[:, None]) ** 2 * torch.exp(-lv) - zs**2).sum(dim=2)
    log_w = log_px.reshape(examples, p.samples) + log_prior_ratio
    return -(torch.logsumexp(log_w, dim=1) - math.log(p.samples)).mean()


def categorical_kl(cfg: Any, p: Pass) -> Tensor:
    """sum_k q (log q + log K) per variable, log q by log_softmax (aebench.losses.categorical_kl)."""
    assert p.category_logits is not None, "family categorical has a categorical posterior"
    k = p.spec.model.latent.categories
    log_q = torch.log_softmax(p.category_logits.reshape(p.category_logits.shape[0], -1, k), dim=-1)
    return reduce((log_q.exp() * (log_q + math.log(k))).sum(dim=-1), cfg.features, cfg.batch)


def gumbel_softmax(spec: Spec, category_logits: Tensor, gumbel: Tensor, temperature: Tensor) -> Tensor:
    """Family categorical's z: softmax((logits + g) / tau) per variable, straight through
    (y + (one_hot(y) - y).detach(), torch.argmax: the first of tied maxima) where ``hard``
    (aebench.categorical states it)."""
    latent = spec.model.latent
    shape = (category_logits.shape[0], -1, latent.categories)
    y = torch.softmax((category_logits.reshape(shape) + gumbel.reshape(shape)) / temperature, dim=-1)
    if latent.hard:
        y = y + (F.one_hot(y.argmax(dim=-1), latent.categories).to(y.dtype) - y).detach()
    return y.reshape(category_logits.shape[0], -1)


def quantized(held: str) -> Callable[[Any, Pass], Tensor]:
    """The codebook (``held`` 'input') or commitment (``held`` 'codes') term: the sum over the
    quantizers of reduce((z_e - z_q)^2), ``held`` detached (aebench.losses._quantizers)."""

    def term(cfg: Any, p: Pass) -> Tensor:
        total: Optional[Tensor] = None
        for layer in quantizers(p.model.plan.layers):
            taps = dict(p.taps[layer.name])
            taps[held] = taps[held].detach()
            part = reduce((taps["input"] - taps["codes"]) ** 2, cfg.features, cfg.batch)
            total = part if total is None else total + part
        assert total is not None, "a spec with this term has a quantizer (its rules)"
        return total

    return term


TERMS: dict[str, Callable[[Any, Pass], Tensor]] = {
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
    x: Tensor,
    labels: Optional[Tensor],
    eps: Optional[Tensor],
    corruption: Optional[Tensor],
    draws: Draws = NO_DRAWS,
) -> dict[str, Tensor]:
    """Unweighted terms and their weighted 'total', as 0-d tensors; ``draws`` are the layers'
    injected draws (dropout masks), read in training mode (``model.training``)."""
    x_in = corrupt(spec, x, corruption)
    h = model.hidden(x_in, labels, draws)
    mean = log_var = category_logits = None
    samples = spec.model.latent.samples
    if spec.model.family == "vae":
        mean, log_var = model.head("z_mean", h), model.head("z_log_var", h)
        assert eps is not None, "family vae gets its reparameterisation noise"
        z = sample_posterior(mean, log_var, eps)
    elif spec.model.family == "categorical":
        category_logits = model.head("logits", h)
        z = gumbel_softmax(spec, category_logits, eps, draws[TEMPERATURE_KEY])
    else:
        z = model.head("code", h)
    taps: Taps = {}
    logits = model.decode_logits(z, None if labels is None else repeat_rows(labels, samples), draws, taps)
    x_rows = repeat_rows(x, samples)
    p = Pass(model, spec, x_rows, x_in, labels, z, mean, log_var, logits, draws, samples, taps, category_logits)
    return with_total(spec, {name: TERMS[name](getattr(spec.loss, name), p) for name in present_terms(spec.loss)})


def output(spec: Spec, logits: Tensor) -> Tensor:
    return activation(Activation(spec.model.output_activation))(logits)
