"""Every loss term in torch, from injected noise, reduced exactly as the spec says.

Same formulas as the oracle (aebench.check.oracle); the contractive Jacobian is autodiff
(vmap of jacrev over the code), so the closed form is a check, not an assumption.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacrev, vmap

from aebench.layers.activations import Activation
from aebench.losses import present_terms
from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import NO_DRAWS, Autoencoder, Draws, activation


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


def reduce(per_element: Tensor, features: str, batch: str) -> Tensor:
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(dim=1) if features == "sum" else flat.mean(dim=1)
    return per_example.sum() if batch == "sum" else per_example.mean()


@dataclass(frozen=True)
class Pass:
    """One forward pass: what the loss terms read."""

    model: Autoencoder
    spec: Spec
    x: Tensor
    x_in: Tensor
    labels: Optional[Tensor]
    z: Tensor
    mean: Optional[Tensor]
    log_var: Optional[Tensor]
    logits: Tensor


def reconstruction(cfg: Any, p: Pass) -> Tensor:
    if cfg.kind == "bce":
        per_element = F.binary_cross_entropy_with_logits(p.logits, p.x, reduction="none")
    else:
        per_element = (output(p.spec, p.logits) - p.x) ** 2
    return reduce(per_element, cfg.features, cfg.batch)


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


TERMS: dict[str, Callable[[Any, Pass], Tensor]] = {
    "reconstruction": reconstruction,
    "kl": kl,
    "sparsity": sparsity,
    "contractive": contractive,
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
    mean = log_var = None
    if spec.model.family == "vae":
        mean, log_var = model.head("z_mean", h), model.head("z_log_var", h)
        z = mean + torch.exp(0.5 * log_var) * eps
    else:
        z = model.head("code", h)
    p = Pass(model, spec, x, x_in, labels, z, mean, log_var, model.decode_logits(z, labels, draws))
    return with_total(spec, {name: TERMS[name](getattr(spec.loss, name), p) for name in present_terms(spec.loss)})


def output(spec: Spec, logits: Tensor) -> Tensor:
    return activation(Activation(spec.model.output_activation))(logits)
