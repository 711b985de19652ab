"""Every loss term in torch, from injected noise, reduced exactly as the spec says.

Same formulas as the oracle (aebench.check.oracle); the contractive Jacobian is autodiff
(vmap of jacrev over the code), so the closed form is a check, not an assumption.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import jacrev, vmap

from aebench.plugins.backend_api import with_total
from aebench.spec.types import Gaussian, Masking, Spec

from .model import Autoencoder


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


def reconstruction(spec: Spec, logits: Tensor, x: Tensor) -> Tensor:
    cfg = spec.loss.reconstruction
    if cfg.kind == "bce":
        per_element = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        out = torch.sigmoid(logits) if spec.model.output_activation == "sigmoid" else logits
        per_element = (out - x) ** 2
    return reduce(per_element, cfg.features, cfg.batch)


def contractive(model: Autoencoder, x_in: Tensor, labels: Optional[Tensor], batch: str) -> Tensor:
    """||d code / d x||_F^2 per example by autodiff, reduced over the batch."""

    def code(xi: Tensor, li: Optional[Tensor]) -> Tensor:
        row = xi[None]
        lab = None if li is None else li[None]
        return model.head("code", model.hidden(row, lab))[0]

    jac = vmap(jacrev(code), in_dims=(0, None if labels is None else 0))(x_in, labels)
    return reduce(jac**2, "sum", batch)


def loss_terms(
    model: Autoencoder,
    spec: Spec,
    x: Tensor,
    labels: Optional[Tensor],
    eps: Optional[Tensor],
    corruption: Optional[Tensor],
) -> dict[str, Tensor]:
    """Unweighted terms and their weighted 'total', as 0-d tensors."""
    loss = spec.loss
    x_in = corrupt(spec, x, corruption)
    h = model.hidden(x_in, labels)
    terms = {}
    if spec.model.family == "vae":
        mean, log_var = model.head("z_mean", h), model.head("z_log_var", h)
        z = mean + torch.exp(0.5 * log_var) * eps
        terms["kl"] = reduce(0.5 * (torch.exp(log_var) + mean**2 - 1.0 - log_var), loss.kl.features, loss.kl.batch)
    else:
        z = model.head("code", h)
    terms["reconstruction"] = reconstruction(spec, model.decode_logits(z, labels), x)
    if loss.sparsity is not None:
        rho, rho_hat = loss.sparsity.rho, z.mean(dim=0)
        kl = rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))
        terms["sparsity"] = kl.sum() if loss.sparsity.units == "sum" else kl.mean()
    if loss.contractive is not None:
        terms["contractive"] = contractive(model, x_in, labels, loss.contractive.batch)
    return with_total(spec, terms)


def output(spec: Spec, logits: Tensor) -> Tensor:
    return torch.sigmoid(logits) if spec.model.output_activation == "sigmoid" else logits
