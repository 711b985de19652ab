"""The comparisons behind the equivalence tests: one canonical case per spec (weights,
batch, injected noise), loss terms against the oracle, gradients against finite
differences of the oracle. Tolerances live in tolerances.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from . import oracle
from .backend_api import Batch, Weights
from .canonical import init_weights
from .data import load_dataset, one_hot
from .noise import CHECK_STREAM, draw_noise, stream
from .shapes import ModelPlan, plan_model
from .spec import Spec
from .tolerances import FD_SAMPLES_PER_ARRAY, FD_STEP, FD_TOL, LOSS_FLOOR_OF_TOTAL, LOSS_RTOL

CHECK_BATCH = 8
BIAS_SD = 0.1  # biases of the check weights are drawn too, so bias layouts are exercised


@dataclass(frozen=True)
class Case:
    """One spec's canonical weights and batch (real data, injected noise), in float64."""

    spec: Spec
    plan: ModelPlan
    weights: Weights
    batch: Batch


@dataclass(frozen=True)
class Comparison:
    """One checked quantity: its largest relative error and the tolerance it must meet."""

    quantity: str
    error: float
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)


def make_case(spec: Spec, seed: int = 0, mnist_path: Optional[str | Path] = None,
              batch_size: int = CHECK_BATCH) -> Case:
    """Weights from the spec's initialiser plus random biases; the first training examples."""
    plan = plan_model(spec)
    rng = stream(seed, CHECK_STREAM)
    weights = init_weights(plan, spec.init.kernel, seed)
    weights = {k: rng.normal(0.0, BIAS_SD, v.shape) if k.endswith(".bias") else v for k, v in weights.items()}
    data = load_dataset(spec, mnist_path)
    labels = None
    if spec.model.conditional:
        labels = one_hot(data.y_train[:batch_size], spec.model.conditioning.num_classes)
    batch = Batch(data.x_train[:batch_size], labels, draw_noise(spec, plan, batch_size, rng))
    return Case(spec, plan, weights, batch)


def relative_error(got: np.ndarray | float, ref: np.ndarray | float, floor: float) -> float:
    """max |got - ref| / max(|ref|, floor), elementwise, as a float (inf on NaN)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    err = np.abs(got - ref) / np.maximum(np.abs(ref), floor)
    return float(np.nan_to_num(err, nan=np.inf).max()) if err.size else 0.0


def compare_loss_terms(got: dict[str, float], ref: dict[str, float], dtype: str) -> list[Comparison]:
    """Each term of ``got`` against the oracle's ``ref`` (same names expected)."""
    if set(got) != set(ref):
        return [Comparison(f"loss terms {sorted(got)} vs oracle {sorted(ref)}", float("inf"), 0.0)]
    floor = LOSS_FLOOR_OF_TOTAL * abs(ref["total"])
    return [Comparison(f"loss:{name}", relative_error(got[name], ref[name], floor), LOSS_RTOL[dtype])
            for name in ref]


def oracle_total(case: Case, weights: Weights) -> float:
    return oracle.loss_terms(case.spec, weights, case.batch, case.plan)["total"]


def fd_entry(case: Case, name: str, index: int, step: float = FD_STEP) -> float:
    """Central finite difference of the oracle's total along one weight entry."""
    values = []
    for sign in (1.0, -1.0):
        moved = dict(case.weights)
        moved[name] = case.weights[name].copy()
        moved[name].flat[index] += sign * step
        values.append(oracle_total(case, moved))
    return (values[0] - values[1]) / (2 * step)


def compare_gradients_fd(case: Case, grads: Weights, seed: int = 0) -> list[Comparison]:
    """Per weight array: sampled entries of ``grads`` against finite differences."""
    rng = np.random.default_rng(seed)
    out = []
    for param in case.plan.params:
        flat = np.asarray(grads[param.name], dtype=np.float64).ravel()
        scale = float(np.abs(flat).max()) or 1.0
        picks = {int(np.argmax(np.abs(flat)))}
        picks.update(int(i) for i in rng.choice(flat.size, min(FD_SAMPLES_PER_ARRAY - 1, flat.size), replace=False))
        worst = max(abs(fd_entry(case, param.name, i) - flat[i]) / scale for i in sorted(picks))
        out.append(Comparison(f"grad-fd:{param.name}", worst, FD_TOL))
    return out
