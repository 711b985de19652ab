"""The minibatch-weighted sampling estimate of beta-TCVAE (Chen et al. 2018, "Isolating Sources
of Disentanglement in VAEs", section 4.1 and appendix C.1), shared by its three terms.

For a batch of M posteriors q(z|x_j) = N(mean_j, exp(log_var_j)) and one sample z_i of each,
drawn from a data set of N examples (``dataset_size``, stated in the spec):

    L[i, j, d] = log N(z_id | mean_jd, exp(log_var_jd))
               = -0.5 * (log(2 pi) + log_var_jd + (z_id - mean_jd)^2 * exp(-log_var_jd))
    log q(z_i|x_i)      = sum_d L[i, i, d]
    log q(z_i)          ~ logsumexp_j (sum_d L[i, j, d]) - log(N M)
    log prod_d q(z_id)  ~ sum_d (logsumexp_j L[i, j, d] - log(N M))
    log p(z_i)          = sum_d -0.5 * (log(2 pi) + z_id^2)

    mutual_information  = mean_i [log q(z_i|x_i) - log q(z_i)]          (index-code MI)
    total_correlation   = mean_i [log q(z_i) - log prod_d q(z_id)]
    dimension_kl        = mean_i [log prod_d q(z_id) - log p(z_i)]      (dimension-wise KL)

Their sum is mean_i [log q(z_i|x_i) - log p(z_i)], a one-sample estimate of the KL they
decompose. N enters only through the constant log(N M), so it moves the values and never the
gradients; the authors' code (rtqichen/beta-tcvae, vae_quant.py) uses the training set's size.
The division by the variance is a product with exp(-log_var) in every backend (the two round differently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aebench.losses.base import Fail, LossTerm, OracleInputs, QualityInputs
from aebench.spec.schema import at_least, rule

LOG_2PI = float(np.log(2.0 * np.pi))
TERMS = ("mutual_information", "total_correlation", "dimension_kl")
"""The three terms of the decomposition, in the order of their ranks."""


@dataclass(frozen=True)
class MinibatchWeighted:
    """One term of beta-TCVAE's decomposition of the KL: its weight (alpha, beta or gamma of the
    paper) and N, the size of the data set the batches are drawn from."""

    weight: float = field(metadata=rule(at_least(0)))
    dataset_size: int = field(metadata=rule(at_least(1)))


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


def decomposition(z: np.ndarray, mean: np.ndarray, log_var: np.ndarray, log_nm: float) -> dict[str, np.ndarray]:
    """Per example (M,), float64: each term of the decomposition before the batch mean, with
    ``log_nm`` the log of the sum's normaliser (log(N M) for minibatch-weighted sampling)."""
    density = -0.5 * (LOG_2PI + log_var[None] + (z[:, None] - mean[None]) ** 2 * np.exp(-log_var[None]))
    joint = density.sum(axis=2)
    log_q_z_given_x = np.diagonal(joint)
    log_q_z = logsumexp(joint, axis=1) - log_nm
    log_prod = (logsumexp(density, axis=1) - log_nm).sum(axis=1)
    log_p = (-0.5 * (LOG_2PI + z**2)).sum(axis=1)
    return {
        "mutual_information": log_q_z_given_x - log_q_z,
        "total_correlation": log_q_z - log_prod,
        "dimension_kl": log_prod - log_p,
    }


def oracle_of(term: str):
    """The float64 oracle of one of the three terms: its batch mean."""

    def oracle(cfg: MinibatchWeighted, inputs: OracleInputs) -> float:
        fwd = inputs.forward
        assert fwd.mean is not None and fwd.log_var is not None, "family vae has a posterior"
        log_nm = np.log(float(cfg.dataset_size) * len(fwd.z))
        return float(decomposition(fwd.z, fwd.mean, fwd.log_var, log_nm)[term].mean())

    return oracle


def quality_of(term: str):
    """The term on the test split as a metric ``test_TERM``: q(z) is the mixture of the first M
    test examples' posteriors, exactly (normaliser M, not the minibatch's N M), each z_i drawn
    once from q(z|x_i); so it is the term under that sample's aggregate posterior."""

    def quality(cfg: MinibatchWeighted, inputs: QualityInputs) -> dict[str, float]:
        mean, log_var = inputs.encoded["mean"], inputs.encoded["log_var"]
        z = mean + np.exp(0.5 * log_var) * inputs.rng.standard_normal(mean.shape)
        return {f"test_{term}": float(decomposition(z, mean, log_var, np.log(float(len(z))))[term].mean())}

    return quality


def rules(cfg: MinibatchWeighted, spec: Any, fail: Fail) -> None:
    """Family vae, one posterior sample per example; without the KL, all three terms (the
    decomposition stands in for it whole); one data-set size; N at least the batch size (the
    estimator draws the batch from N)."""
    present = [name for name in TERMS if getattr(spec.loss, name) is not None]
    if spec.model.family != "vae":
        fail(f"loss.{present[0]}", "only allowed for family vae (it decomposes the KL of the posterior)")
    if spec.model.latent.samples != 1:
        fail(
            "model.latent.samples",
            f"must be 1 with loss.{present[0]} (the estimate pairs each example's posterior with its one "
            f"sample); got {spec.model.latent.samples}",
        )
    if spec.loss.kl is None and len(present) < len(TERMS):
        missing = ", ".join(f"loss.{name}" for name in TERMS if name not in present)
        fail(f"loss.{present[0]}", f"without loss.kl needs all of {', '.join(TERMS)}; add {missing} or loss.kl")
    sizes = {getattr(spec.loss, name).dataset_size for name in present}
    if len(sizes) > 1:
        fail(f"loss.{present[-1]}.dataset_size", f"must be the same in every term; got {sorted(sizes)}")
    if cfg.dataset_size < spec.train.batch_size:
        fail(
            f"loss.{present[0]}.dataset_size",
            f"must be at least train.batch_size ({spec.train.batch_size}); got {cfg.dataset_size}",
        )


def decomposition_term(name: str, rank: int) -> LossTerm:
    """The LossTerm of one part of the decomposition: together they stand in for the KL."""
    return LossTerm(
        name,
        MinibatchWeighted,
        rank=rank,
        weight=lambda cfg: cfg.weight,
        oracle=oracle_of(name),
        rules=rules,
        stands_in_for=frozenset({"kl"}),
        quality=quality_of(name),
        figures=frozenset({"latent_traversals", "codes_against_prior"}),
    )
