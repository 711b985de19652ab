"""kl: KL(q(z|x) || N(0, I)) = 0.5 * sum(exp(lv) + mu^2 - 1 - lv), weighted by beta (family vae)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.losses.base import Fail, LossTerm, OracleInputs, reduce
from aebench.spec.schema import at_least, rule


@dataclass(frozen=True)
class KL:
    """KL(q(z|x) || N(0, I)) = 0.5 * sum(exp(lv) + mu^2 - 1 - lv), weighted by beta."""

    beta: float = field(metadata=rule(at_least(0)))
    features: Literal["sum", "mean"]
    batch: Literal["mean", "sum"]


def kl_loss(cfg: KL, mean: np.ndarray, log_var: np.ndarray) -> float:
    """KL(N(mean, exp(log_var)) || N(0, I)), reduced as the spec says."""
    return reduce(0.5 * (np.exp(log_var) + mean**2 - 1.0 - log_var), cfg.features, cfg.batch)


def oracle(cfg: KL, inputs: OracleInputs) -> float:
    fwd = inputs.forward
    assert fwd.mean is not None and fwd.log_var is not None, "family vae has a posterior"
    return kl_loss(cfg, fwd.mean, fwd.log_var)


def rules(cfg: KL, spec: Any, fail: Fail) -> None:
    if spec.model.family != "vae":
        fail("loss.kl", "only allowed for family vae")


def required(spec: Any) -> str:
    return "for family vae: the ELBO's KL term; beta 0 switches it off" if spec.model.family == "vae" else ""


TERM = LossTerm("kl", KL, rank=1, weight=lambda cfg: cfg.beta, oracle=oracle, rules=rules, required=required)
