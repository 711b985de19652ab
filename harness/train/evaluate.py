"""Mean loss terms of a model over a whole split, with fixed noise (used by train and quality)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from aebench.data.noise import TEST_STREAM, draw_noise, stream
from aebench.plugins.backend_api import Backend, Batch
from aebench.spec.shapes import ModelPlan
from aebench.spec.types import Spec

EVAL_BATCH = 500


def evaluate(
    backend: Backend,
    model: object,
    spec: Spec,
    plan: ModelPlan,
    x: np.ndarray,
    labels: Optional[np.ndarray],
    batch_size: int = EVAL_BATCH,
) -> dict[str, float]:
    """Mean loss terms over ``x`` in fixed batches with fixed noise (the TEST stream), in
    evaluation mode (running statistics, no dropout).

    Batch-mean terms average exactly; the sparsity term's rho_hat is per batch of ``batch_size``.
    """
    rng = stream(spec.train.seed, TEST_STREAM)
    sums: dict[str, float] = {}
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size]
        lb = None if labels is None else labels[start : start + batch_size]
        noise = draw_noise(spec, plan, len(xb), rng, training=False)
        terms = backend.loss_terms(model, Batch(xb, lb, noise), training=False)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value * len(xb)
    return {name: total / len(x) for name, total in sums.items()}
