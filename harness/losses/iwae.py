"""iwae: the negative importance-weighted bound of Burda et al. 2016 ("Importance Weighted
Autoencoders", equation 8), weighted by its weight; family vae with k = model.latent.samples >= 2.
It stands in for reconstruction and kl: the bound is the whole objective.

For each example x_i of the batch and its k posterior samples z_ij = mean_i + exp(log_var_i / 2)
eps_ij (rows i k + j of Forward.z, example-major):

    log w_ij = log p(x_i|z_ij) + log N(z_ij; 0, I) - log N(z_ij; mean_i, exp(log_var_i))
    iwae     = -mean_i [logsumexp_j (log w_ij) - log k]

The log(2 pi) of the two Gaussian densities cancel and are left out:

    log N(z; 0, I) - log N(z; mean, exp(log_var))
        = 0.5 * sum_d (log_var_d + (z_d - mean_d)^2 * exp(-log_var_d) - z_d^2)

with the division by the variance a product with exp(-log_var), in the oracle and every backend
(as aebench.losses._minibatch_weighted; (z - mean)^2 exp(-log_var) is eps^2 in exact arithmetic,
not in rounding). The decoder's likelihood (``likelihood``):

- bernoulli: log p(x|z) = -sum_d bce(logits, x), the logits form of the reconstruction term's
  bce (max(l, 0) - l x + log(1 + exp(-|l|))); it needs output_activation sigmoid.
- gaussian: log N(x; output, variance I), output the output activation of the logits, the
  ``variance`` stated, its normalising constant (D/2) log(2 pi variance) included.

The gradient is the bound's: each sample's gradient weighted by its normalised importance
weight softmax_j(log w_ij) (the paper's equation 14), not by 1/k as in the k-sample ELBO; with
k = 1 the term is the ELBO with the KL estimated from the one sample. The value is float64 in
the oracle; the backends take logsumexp over each example's k samples (torch.logsumexp,
jax.nn.logsumexp, keras.ops.logsumexp), never log(mean(exp)), which overflows: log w is in the
hundreds of nats for MNIST.

Quality (LossTerm.quality): ``test_nll_k5000``, the paper's importance-sampled estimate of
-log p(x) with k = 5000 (its section 5) on the first QUALITY_EXAMPLES test examples (the
likelihood from decoded outputs, as the quality step's ``nll_is``: aebench.train.quality).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from aebench.layers.activations import Activation, activate
from aebench.losses._minibatch_weighted import logsumexp
from aebench.losses.base import Fail, LossTerm, OracleInputs, QualityInputs
from aebench.losses.reconstruction import bce_with_logits, bernoulli_log_likelihood, gaussian_log_likelihood
from aebench.spec.schema import at_least, greater_than, rule

QUALITY_SAMPLES = 5000
"""k of the quality metric's importance-sampled NLL: the paper's (Burda et al. 2016, section 5)."""
QUALITY_EXAMPLES = 50
"""Test examples the k = 5000 NLL is estimated on: 250,000 decoded rows (4.2 GFLOP of the dense
MNIST decoder of specs/iwae.yaml per example). Measured on two CPU cores shared at a load of 7 to
8: 10 s of CPU time with the JAX backend (15 to 24 s of wall time), 20 s with torch (35 s); the
likelihood of an example's 5,000 decoded rows costs about as much as decoding them."""
QUALITY_ROWS = 1000
"""Rows per decode call and likelihood of the quality metric: fewer than the quality step's own
NLL decodes at once (QualitySettings.decode_rows, 2000), which the memory estimate counts
(aebench.spec.memory.nll_values), so the metric adds no peak of its own."""


@dataclass(frozen=True)
class IWAE:
    """weight * the negative k-sample importance-weighted bound; the decoder's likelihood
    bernoulli (from the logits) or gaussian with a fixed ``variance`` (gaussian only)."""

    weight: float = field(metadata=rule(at_least(0)))
    likelihood: Literal["bernoulli", "gaussian"]
    variance: Optional[float] = field(default=None, metadata=rule(greater_than(0)))


def log_prior_ratio(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """log N(z; 0, I) - log N(z; mean, exp(log_var)) per sample, (B, k), float64, from z (B k,
    latent) example-major and the posterior (B, latent) (the docstring's product form)."""
    zs = z.reshape(len(mean), -1, mean.shape[1])
    lv = log_var[:, None, :]
    return 0.5 * (lv + (zs - mean[:, None, :]) ** 2 * np.exp(-lv) - zs**2).sum(axis=2)


def log_likelihood_from_logits(cfg: IWAE, output_activation: str, logits: np.ndarray, x: np.ndarray) -> np.ndarray:
    """log p(x|z) per row from the logits and the target of the same rows, float64 (the docstring's forms)."""
    rows = len(logits)
    if cfg.likelihood == "bernoulli":
        return -bce_with_logits(logits, x).reshape(rows, -1).sum(axis=1)
    assert cfg.variance is not None, "rules: gaussian states its variance"
    return gaussian_log_likelihood(x, activate(Activation(output_activation), logits), cfg.variance)


def bound(log_w: np.ndarray) -> np.ndarray:
    """The importance-weighted bound per example: logsumexp over its k log weights - log k."""
    return logsumexp(log_w, axis=1) - math.log(log_w.shape[1])


def iwae_loss(
    cfg: IWAE,
    output_activation: str,
    logits: np.ndarray,
    target: np.ndarray,
    z: np.ndarray,
    mean: np.ndarray,
    log_var: np.ndarray,
) -> float:
    """-mean_i bound_i from the pass's logits, target and z (B k rows) and posterior (B rows)."""
    log_px = log_likelihood_from_logits(cfg, output_activation, logits, target).reshape(len(mean), -1)
    return float(-bound(log_px + log_prior_ratio(z, mean, log_var)).mean())


def oracle(cfg: IWAE, inputs: OracleInputs) -> float:
    fwd = inputs.forward
    assert fwd.mean is not None and fwd.log_var is not None, "family vae has a posterior"
    return iwae_loss(cfg, inputs.spec.model.output_activation, fwd.logits, inputs.target, fwd.z, fwd.mean, fwd.log_var)


def log_likelihood(cfg: IWAE, x: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """log p(x|z) per row of decoded, float64, for the quality step's NLL: Bernoulli from
    probabilities clipped to [eps, 1 - eps] of their dtype, or the stated Gaussian; x has as
    many rows, or one row for all of them."""
    if cfg.likelihood == "bernoulli":
        return bernoulli_log_likelihood(x, decoded)
    assert cfg.variance is not None, "rules: gaussian states its variance"
    return gaussian_log_likelihood(x, decoded, cfg.variance)


def quality(cfg: IWAE, inputs: QualityInputs) -> dict[str, float]:
    """test_nll_k5000: -log p(x) estimated by the k = 5000 bound (the paper's NLL) on the first
    QUALITY_EXAMPLES test examples, the samples drawn from the quality step's term stream."""
    mean, log_var = inputs.encoded["mean"], inputs.encoded["log_var"]
    n = min(QUALITY_EXAMPLES, len(mean))
    bounds = np.empty(n)
    for i in range(n):
        eps = inputs.rng.standard_normal((1, QUALITY_SAMPLES, mean.shape[1]))
        z = mean[i] + np.exp(0.5 * log_var[i]) * eps
        log_px = np.concatenate(  # x's one row against each chunk of decoded samples
            [
                log_likelihood(cfg, inputs.x[i : i + 1], inputs.decode(z[:, start : start + QUALITY_ROWS]))
                for start in range(0, QUALITY_SAMPLES, QUALITY_ROWS)
            ]
        )
        log_w = log_px[None] + log_prior_ratio(z.reshape(QUALITY_SAMPLES, -1), mean[i : i + 1], log_var[i : i + 1])
        bounds[i] = bound(log_w)[0]
    return {f"test_nll_k{QUALITY_SAMPLES}": float(-bounds.mean())}


def rules(cfg: IWAE, spec: Any, fail: Fail) -> None:
    if spec.model.family != "vae":
        fail("loss.iwae", "only allowed for family vae (it importance-weights samples of the posterior)")
    samples = spec.model.latent.samples
    if samples < 2:
        fail(
            "model.latent.samples",
            f"must be at least 2 with loss.iwae (with 1 sample the bound is the ELBO with a sampled KL: "
            f"use loss.reconstruction and loss.kl); got {samples}",
        )
    if cfg.likelihood == "bernoulli" and spec.model.output_activation != "sigmoid":
        fail("loss.iwae.likelihood", "bernoulli needs output_activation sigmoid (it is computed from the logits)")
    if cfg.likelihood == "gaussian" and cfg.variance is None:
        fail("loss.iwae.variance", "is required for likelihood gaussian (the decoder's fixed variance, > 0)")
    if cfg.likelihood == "bernoulli" and cfg.variance is not None:
        fail("loss.iwae.variance", "only applies to likelihood gaussian; remove it for bernoulli")


TERM = LossTerm(
    "iwae",
    IWAE,
    rank=9,
    weight=lambda cfg: cfg.weight,
    oracle=oracle,
    rules=rules,
    log_likelihood=log_likelihood,
    stands_in_for=frozenset({"reconstruction", "kl"}),
    quality=quality,
)
