"""sliced_wasserstein: the sliced Wasserstein distance between the batch's codes and as many
samples of the prior N(0, I), the penalty of SWAE (Kolouri et al. 2019, "Sliced-Wasserstein
Autoencoder: An Embarrassingly Simple Generative Model", equation 14), weighted by its weight;
family ae.

With codes z and prior samples p (n of each, latent d) and L unit directions theta_l:

    sliced_wasserstein = mean_{k, l} |sort(z theta_l)_k - sort(p theta_l)_k|^power

each projection sorted over the batch, ascending, by a stable sort: tied values keep their
order in the batch, so the gradient of a tie goes to the same example in every backend (the
sorted values are equal either way; which example receives each one's gradient is not).
keras.ops.sort on its torch engine calls torch.sort without stable=True; every backend here
sorts by a stable argsort and gathers. The directions and the prior samples are injected
(LossTerm.draws): 'projections', (L, d), standard normal rows divided by their norm in NumPy
float64 (as PyTorch-VAE's SWAE draws them); 'prior', (B, d), standard normal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aebench.losses.base import Fail, OracleInputs, QualityInputs, draw_key, prior_draw, prior_matching_term
from aebench.spec.schema import at_least, in_range, rule

MAX_PROJECTIONS = 100_000


@dataclass(frozen=True)
class SlicedWasserstein:
    """weight * mean over directions and sorted ranks of |projected code - projected prior|^power."""

    weight: float = field(metadata=rule(at_least(0)))
    projections: int = field(metadata=rule(in_range(1, MAX_PROJECTIONS)))
    power: float = field(metadata=rule(at_least(1)))


def unit_directions(count: int, dims: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` directions uniform on the unit sphere of R^dims: normal rows over their norms."""
    rows = rng.standard_normal((count, dims))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def draws(cfg: SlicedWasserstein, plan: Any, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        **prior_draw(cfg, plan, batch_size, rng),
        "projections": unit_directions(cfg.projections, plan.latent_size, rng),
    }


def sliced_wasserstein_loss(cfg: SlicedWasserstein, z: np.ndarray, prior: np.ndarray, directions: np.ndarray) -> float:
    """The docstring's formula, float64 (NumPy's stable sort)."""
    projected_z = np.sort(z @ directions.T, axis=0, kind="stable")
    projected_prior = np.sort(prior @ directions.T, axis=0, kind="stable")
    return float((np.abs(projected_z - projected_prior) ** cfg.power).mean())


def oracle(cfg: SlicedWasserstein, inputs: OracleInputs) -> float:
    drawn = inputs.batch.noise.draws
    key = "sliced_wasserstein"
    return sliced_wasserstein_loss(
        cfg, inputs.forward.z, drawn[draw_key(key, "prior")], drawn[draw_key(key, "projections")]
    )


def quality(cfg: SlicedWasserstein, inputs: QualityInputs) -> dict[str, float]:
    """test_sliced_wasserstein: the same distance between the first test examples' codes and as
    many fresh prior samples, over fresh directions (0 when the codes follow the prior)."""
    code = inputs.encoded["code"]
    prior = inputs.rng.standard_normal(code.shape)
    directions = unit_directions(cfg.projections, code.shape[1], inputs.rng)
    return {"test_sliced_wasserstein": sliced_wasserstein_loss(cfg, code, prior, directions)}


def rules(cfg: SlicedWasserstein, spec: Any, fail: Fail) -> None:
    if spec.model.family != "ae":
        fail("loss.sliced_wasserstein", "only allowed for family ae (SWAE's encoder is deterministic)")


TERM = prior_matching_term(
    "sliced_wasserstein", SlicedWasserstein, rank=8, oracle=oracle, rules=rules, quality=quality, draws=draws
)
