"""sparsity: weight * reduce_j KL(rho || rho_hat_j), rho_hat = the batch mean of the sigmoid code.

Computed explicitly in every backend (Keras' add_loss and activity regularizers scale
differently across versions: docs/EQUIVALENCE.md, 'Losses').
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.losses.base import Fail, LossTerm, OracleInputs
from aebench.spec.schema import at_least, in_interval, rule


@dataclass(frozen=True)
class Sparsity:
    """weight * reduce_j KL(rho || rho_hat_j), rho_hat = batch mean of the (sigmoid) code."""

    rho: float = field(metadata=rule(in_interval(0, 1, closed_low=False, closed_high=False)))
    weight: float = field(metadata=rule(at_least(0)))
    units: Literal["sum", "mean"]


def sparsity_loss(cfg: Sparsity, code: np.ndarray) -> float:
    """sum_j (or mean_j) KL(rho || rho_hat_j) of Bernoulli laws; rho_hat = batch mean of the code."""
    rho, rho_hat = cfg.rho, code.mean(axis=0)
    kl = rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))
    return float(kl.sum() if cfg.units == "sum" else kl.mean())


def oracle(cfg: Sparsity, inputs: OracleInputs) -> float:
    assert inputs.forward.code is not None, "family ae has a code"
    return sparsity_loss(cfg, inputs.forward.code)


def rules(cfg: Sparsity, spec: Any, fail: Fail) -> None:
    if spec.model.family != "ae" or spec.model.latent.activation.name != "sigmoid":
        fail(
            "loss.sparsity",
            "needs family ae with a sigmoid code (model.latent.activation: sigmoid), so that rho_hat lies in (0, 1)",
        )


TERM = LossTerm(
    "sparsity",
    Sparsity,
    rank=2,
    weight=lambda cfg: cfg.weight,
    oracle=oracle,
    rules=rules,
    code_target=lambda cfg: cfg.rho,
)
