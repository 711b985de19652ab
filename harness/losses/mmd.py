"""mmd: the maximum mean discrepancy between the batch's codes and as many samples of the prior
N(0, I), the penalty of WAE-MMD (Tolstikhin et al. 2018, "Wasserstein Auto-Encoders",
algorithm 2), weighted by its weight (lambda); family ae (the encoder is deterministic).

The unbiased estimate of MMD^2 (Gretton et al. 2012), codes z and prior samples p, n of each:

    sum_{i != j} k(z_i, z_j) / (n (n - 1)) + sum_{i != j} k(p_i, p_j) / (n (n - 1))
        - 2 sum_{i, j} k(z_i, p_j) / n^2

with the diagonal left out of the sums (k(a, a) is a constant: it moves no gradient, but it
biases the value). The kernel is a sum over ``scales`` s, each with C = 2 * latent * bandwidth^2 * s
(bandwidth: the prior's standard deviation, as the paper's C = 2 d sigma^2):

    imq: k(a, b) = sum_s C / (C + ||a - b||^2)        rbf: k(a, b) = sum_s exp(-||a - b||^2 / C)

||a - b||^2 is the sum of the squared differences, never ||a||^2 - 2 a.b + ||b||^2 (that form
cancels catastrophically for close codes and can go negative). The prior samples are injected
(LossTerm.draws: 'prior', (B, latent), standard normal).

pythae's WAE_MMD (models/wae_mmd/wae_mmd_model.py) subtracts ``k.diag()`` from the whole matrix,
which broadcasts the diagonal over every row: its value is off by a constant (2 * len(scales)),
its gradient is this one's; it also adds reg_weight times n times the estimate to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.losses.base import Fail, OracleInputs, QualityInputs, draw_key, prior_matching_term
from aebench.spec.schema import at_least, greater_than, rule


@dataclass(frozen=True)
class MMD:
    """weight * MMD^2(codes, prior samples), unbiased, with a multi-scale imq or rbf kernel."""

    weight: float = field(metadata=rule(at_least(0)))
    kernel: Literal["imq", "rbf"]
    bandwidth: float = field(metadata=rule(greater_than(0)))
    scales: tuple[float, ...]


def kernel_matrix(cfg: MMD, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k(a_i, b_j) for every pair, float64."""
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    base = 2.0 * a.shape[1] * cfg.bandwidth**2
    total = np.zeros_like(squared)
    for scale in cfg.scales:
        c = base * scale
        total = total + (c / (c + squared) if cfg.kernel == "imq" else np.exp(-squared / c))
    return total


def mmd_loss(cfg: MMD, z: np.ndarray, prior: np.ndarray) -> float:
    """The unbiased MMD^2 estimate between codes z and prior samples (the docstring's formula)."""
    n = len(z)
    off_diagonal = 1.0 - np.eye(n)
    within = ((kernel_matrix(cfg, z, z) + kernel_matrix(cfg, prior, prior)) * off_diagonal).sum() / (n * (n - 1))
    return float(within - 2.0 * kernel_matrix(cfg, z, prior).sum() / n**2)


def oracle(cfg: MMD, inputs: OracleInputs) -> float:
    return mmd_loss(cfg, inputs.forward.z, inputs.batch.noise.draws[draw_key("mmd", "prior")])


def quality(cfg: MMD, inputs: QualityInputs) -> dict[str, float]:
    """test_mmd: the same estimate between the first test examples' codes and as many fresh
    prior samples (0 in expectation when the codes follow the prior)."""
    code = inputs.encoded["code"]
    return {"test_mmd": mmd_loss(cfg, code, inputs.rng.standard_normal(code.shape))}


def rules(cfg: MMD, spec: Any, fail: Fail) -> None:
    if spec.model.family != "ae":
        fail("loss.mmd", "only allowed for family ae (WAE-MMD's encoder is deterministic)")
    if not cfg.scales or any(not s > 0 for s in cfg.scales):
        fail("loss.mmd.scales", f"must be a non-empty list of numbers > 0; got {list(cfg.scales)}")
    if spec.train.batch_size < 2:
        fail("train.batch_size", "must be at least 2 for loss.mmd (the unbiased estimate pairs distinct codes)")


TERM = prior_matching_term("mmd", MMD, rank=7, oracle=oracle, rules=rules, quality=quality)
