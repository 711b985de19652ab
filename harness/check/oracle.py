"""The NumPy float64 oracle: forward pass and every loss term of every spec.

Each layer is its kind's oracle (aebench.layers: Keras'/TensorFlow's semantics, written
out in each kind's module), then its activation (aebench.layers.activations). The decoder
returns logits; the output activation is applied for images and for MSE only, and BCE is
computed from the logits in its stable form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from aebench.layers import kind_of
from aebench.layers.activations import activate, activation_slope, sigmoid
from aebench.layers.base import LayerPlan
from aebench.plugins.backend_api import Batch, Weights, with_total
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import KL, Contractive, Corruption, Gaussian, Masking, Reconstruction, Sparsity, Spec

# ---------------------------------------------------------------- layers


def apply_layer(plan: LayerPlan, weights: Weights, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pre-activation, output) of one layer: its kind's oracle, then its activation if it has one."""
    pre = kind_of(plan.layer).oracle(plan, weights, x)
    act = getattr(plan.layer, "activation", None)
    return pre, pre if act is None else activate(act, pre)


def run_stack(layers: tuple[LayerPlan, ...], weights: Weights, x: np.ndarray) -> np.ndarray:
    for plan in layers:
        x = apply_layer(plan, weights, x)[1]
    return x


# ---------------------------------------------------------------- corruption


def corrupt(corruption: Optional[Corruption], x: np.ndarray, noise: Optional[np.ndarray]) -> np.ndarray:
    """The encoder's input: x corrupted by the injected noise (aebench.spec.types documents each kind)."""
    if corruption is None:
        return x
    if isinstance(corruption, Gaussian):
        out = x + corruption.std * noise
        return out if corruption.clip is None else np.clip(out, *corruption.clip)
    if isinstance(corruption, Masking):
        return np.where(noise < corruption.fraction, 0.0, x)
    half = corruption.fraction / 2
    return np.where(noise < half, 0.0, np.where(noise >= 1 - half, 1.0, x))


# ---------------------------------------------------------------- loss terms


def reduce(per_element: np.ndarray, features: str, batch: str) -> float:
    """Reduce over every non-batch axis (sum or mean), then over the batch (mean or sum)."""
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(axis=1) if features == "sum" else flat.mean(axis=1)
    return float(per_example.sum() if batch == "sum" else per_example.mean())


def bce_with_logits(logits: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Elementwise binary cross-entropy from logits, the stable form."""
    return np.maximum(logits, 0) - logits * target + np.log1p(np.exp(-np.abs(logits)))


def reconstruction_loss(cfg: Reconstruction, output_activation: str, logits: np.ndarray, x: np.ndarray) -> float:
    if cfg.kind == "bce":
        return reduce(bce_with_logits(logits, x), cfg.features, cfg.batch)
    out = sigmoid(logits) if output_activation == "sigmoid" else logits
    return reduce((out - x) ** 2, cfg.features, cfg.batch)


def kl_loss(cfg: KL, mean: np.ndarray, log_var: np.ndarray) -> float:
    """KL(N(mean, exp(log_var)) || N(0, I)), reduced as the spec says."""
    return reduce(0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var), cfg.features, cfg.batch)


def sparsity_loss(cfg: Sparsity, code: np.ndarray) -> float:
    """sum_j (or mean_j) KL(rho || rho_hat_j) of Bernoulli laws; rho_hat = batch mean of the code."""
    rho, rho_hat = cfg.rho, code.mean(axis=0)
    kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
    return float(kl.sum() if cfg.units == "sum" else kl.mean())


def code_jacobian(plan: ModelPlan, weights: Weights, x_in: np.ndarray) -> np.ndarray:
    """d code / d x for a dense encoder, shape (B, features of x, code units).

    Chain rule through each Dense layer: J <- (J @ W) * act'(pre). Label inputs of a
    conditional spec are not differentiated (only the first rows of the first kernel).
    """
    layers = plan.encoder + plan.heads
    h = x_in
    jac = None
    for layer_plan in layers:
        kernel = weights[f"{layer_plan.name}.kernel"]
        pre, h = apply_layer(layer_plan, weights, h)
        slope = activation_slope(layer_plan.layer.activation, pre)[:, None, :]
        jac = (kernel[: x_in.shape[1] - plan.label_size] if jac is None else jac @ kernel) * slope
    assert jac is not None, "an encoder has at least its code head"
    return jac


def contractive_loss(cfg: Contractive, jacobian: np.ndarray) -> float:
    """||J||_F^2 per example, reduced over the batch."""
    return reduce(jacobian**2, "sum", cfg.batch)


# ---------------------------------------------------------------- the whole model


@dataclass(frozen=True)
class Forward:
    """Every intermediate the loss terms need."""

    x_in: np.ndarray
    code: Optional[np.ndarray]
    mean: Optional[np.ndarray]
    log_var: Optional[np.ndarray]
    z: np.ndarray
    logits: np.ndarray


def forward(spec: Spec, weights: Weights, batch: Batch, plan: Optional[ModelPlan] = None) -> Forward:
    """The float64 forward pass with the batch's injected noise."""
    plan = plan or plan_model(spec)
    weights = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
    x = np.asarray(batch.x, dtype=np.float64)
    labels = None if batch.labels is None else np.asarray(batch.labels, dtype=np.float64)
    x_in = corrupt(spec.corruption, x, batch.noise.corruption)
    h = run_stack(plan.encoder, weights, _join_labels(x_in, labels))
    code = mean = log_var = None
    if spec.model.family == "vae":
        mean = apply_layer(plan.heads[0], weights, h)[1]
        log_var = apply_layer(plan.heads[1], weights, h)[1]
        z = mean + np.exp(0.5 * log_var) * batch.noise.eps
    else:
        code = z = apply_layer(plan.heads[0], weights, h)[1]
    logits = run_stack(plan.decoder, weights, _join_labels(z, labels))
    return Forward(x_in, code, mean, log_var, z, logits)


def _join_labels(x: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
    return x if labels is None else np.concatenate([x, labels], axis=1)


def loss_terms(spec: Spec, weights: Weights, batch: Batch, plan: Optional[ModelPlan] = None) -> dict[str, float]:
    """Every loss term of the spec (unweighted) and their weighted total, in float64."""
    plan = plan or plan_model(spec)
    fwd = forward(spec, weights, batch, plan)
    x = np.asarray(batch.x, dtype=np.float64)
    loss = spec.loss
    terms = {"reconstruction": reconstruction_loss(loss.reconstruction, spec.model.output_activation, fwd.logits, x)}
    if loss.kl is not None:
        assert fwd.mean is not None and fwd.log_var is not None
        terms["kl"] = kl_loss(loss.kl, fwd.mean, fwd.log_var)
    if loss.sparsity is not None:
        assert fwd.code is not None
        terms["sparsity"] = sparsity_loss(loss.sparsity, fwd.code)
    if loss.contractive is not None:
        weights64 = {k: np.asarray(v, dtype=np.float64) for k, v in weights.items()}
        jac = code_jacobian(plan, weights64, _join_labels(fwd.x_in, batch.labels))
        terms["contractive"] = contractive_loss(loss.contractive, jac)
    return with_total(spec, terms)


def output(spec: Spec, logits: np.ndarray) -> np.ndarray:
    """What a user sees: sigmoid(logits) for image specs, the linear output otherwise."""
    return sigmoid(logits) if spec.model.output_activation == "sigmoid" else logits
