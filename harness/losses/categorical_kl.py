"""categorical_kl: the KL of family categorical's posterior to its uniform prior, weighted by its
weight (the ELBO's KL term of Jang et al. 2017's categorical VAE). With q_n = softmax(logits_n)
over the K categories of variable n (aebench.categorical):

    KL(q_n || Uniform(K)) = sum_k q_nk (log q_nk + log K)

``features`` reduces over the N variables (sum, or mean), ``batch`` over the examples. log q is
log_softmax(logits), never log(softmax(logits)): softmax underflows to exactly 0 for a logit
more than about 104 (float32) or 745 (float64) below its variable's largest, where log gives
-inf and q log q = 0 * -inf a NaN, in value and gradient; log_softmax stays finite. PyTorch-VAE
(models/cat_vae.py) and the authors' notebook take log(q + eps) (eps 1e-7 and 1e-20), which
stays finite but is not this value. The KL is in closed form: no sample enters it, so it is the
same at every temperature and for soft and straight-through samples alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.categorical import kl_to_uniform, usage_entropy
from aebench.losses.base import Fail, LossTerm, OracleInputs, QualityInputs, reduce
from aebench.spec.schema import at_least, rule


@dataclass(frozen=True)
class CategoricalKL:
    """weight * KL(q(c|x) || Uniform(K)), summed over each variable's categories, reduced over
    the variables (``features``) and the batch."""

    weight: float = field(metadata=rule(at_least(0)))
    features: Literal["sum", "mean"]
    batch: Literal["mean", "sum"]


def categorical_kl_loss(cfg: CategoricalKL, category_logits: np.ndarray, categories: int) -> float:
    """The term's value from the posterior's logits (B, N K), reduced as the spec says."""
    return reduce(kl_to_uniform(category_logits, categories), cfg.features, cfg.batch)


def oracle(cfg: CategoricalKL, inputs: OracleInputs) -> float:
    fwd = inputs.forward
    assert fwd.category_logits is not None, "family categorical has a categorical posterior"
    return categorical_kl_loss(cfg, fwd.category_logits, inputs.spec.model.latent.categories)


def quality(cfg: CategoricalKL, inputs: QualityInputs) -> dict[str, float]:
    """test_categorical_kl: the KL per example, summed over the variables (nats), averaged over
    the first test examples; test_code_usage_entropy: aebench.categorical.usage_entropy of their
    posteriors (log K: every category used alike; 0: one category per variable for all)."""
    logits, categories = inputs.encoded["logits"], inputs.spec.model.latent.categories
    return {
        "test_categorical_kl": float(kl_to_uniform(logits, categories).sum(axis=1).mean()),
        "test_code_usage_entropy": usage_entropy(logits, categories),
    }


def rules(cfg: CategoricalKL, spec: Any, fail: Fail) -> None:
    if spec.model.family != "categorical":
        fail("loss.categorical_kl", "only allowed for family categorical (the KL of categorical variables)")


def required(spec: Any) -> str:
    if spec.model.family != "categorical":
        return ""
    return "for family categorical: the ELBO's KL to the uniform prior; weight 0 switches it off"


TERM = LossTerm(
    "categorical_kl",
    CategoricalKL,
    rank=12,
    weight=lambda cfg: cfg.weight,
    oracle=oracle,
    rules=rules,
    required=required,
    quality=quality,
)
