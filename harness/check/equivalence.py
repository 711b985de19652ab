"""The comparisons behind the equivalence suite and ``aebench check``.

One canonical case per spec (weights, a batch of real data, injected noise) goes to every
backend; what comes back is compared with the NumPy oracle (loss terms, encode/decode),
with finite differences of the oracle (float64 gradients), with a reference backend's
float64 gradients (float32 gradients) and with a reference backend's 50-step Adam
trajectory. Tolerances live in tolerances.py; a backend's known gaps (gaps.py) replace a
tolerance with a stated one and the comparison says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from aebench.check import oracle
from aebench.check.gaps import gap_for
from aebench.check.tolerances import (
    FD_RETRY_DIVISOR,
    FD_SAMPLES_PER_ARRAY,
    FD_STEP,
    FD_TOL,
    GRAD_SPREAD_MARGIN,
    GRAD_TOL,
    GRADIENT_NUDGES,
    LOSS_FLOOR_OF_TOTAL,
    LOSS_RTOL,
    NUDGE_ULPS,
    ROUNDING_SPREAD_MARGIN,
    TRAJECTORY_BATCH,
    TRAJECTORY_EPOCH_STEPS,
    TRAJECTORY_LOSS_RTOL,
    TRAJECTORY_STEPS,
    trajectory_tolerances,
)
from aebench.data.datasets import load_dataset, one_hot
from aebench.data.noise import CHECK_STREAM, draw_noise, stream
from aebench.layers import Tape
from aebench.losses.base import repeat_rows
from aebench.plugins.backend_api import Backend, Batch, Noise, Step, Weights, loss_term_names
from aebench.plugins.canonical import init_weights
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import Spec

CHECK_BATCH = 8
NUDGE_KEY = 2  # the stream of the nudges' signs (nudged), apart from make_case's
BIAS_SD = 0.1  # biases of the check weights are drawn too, so bias layouts are exercised


@dataclass(frozen=True)
class Case:
    """One spec's canonical weights and batch (real data, injected noise), in float64."""

    spec: Spec
    plan: ModelPlan
    weights: Weights
    batch: Batch
    train_x: np.ndarray  # TRAJECTORY_STEPS * TRAJECTORY_BATCH examples for the trajectory
    train_labels: Optional[np.ndarray]
    finite_differences: dict[tuple[str, int, float], float] = field(default_factory=dict, compare=False, repr=False)
    """The oracle's finite differences computed so far (fd_entry), shared by every backend checked."""
    held: list[tuple[Weights, Tape]] = field(default_factory=list, compare=False, repr=False)
    """The oracle's training-mode tape at the case's weights (and those weights), recorded once (held_tape)."""


@dataclass(frozen=True)
class Trajectory:
    """Per-step loss terms (steps, terms) and the canonical weights after the last step of a training run."""

    losses: np.ndarray
    weights: Weights
    device: str = "cpu"  # Backend.device() of the run: it selects the tolerances
    rounding_spread: dict[str, float] = field(default_factory=dict)
    """Per compared quantity, how far the same backend's run from a nudged start lies from this
    one (reference_trajectory); empty when not measured."""

    @property
    def steps(self) -> int:
        return len(self.losses)


@dataclass(frozen=True)
class Comparison:
    """One checked quantity: its largest relative error, the tolerance it must meet and,
    when a known gap set that tolerance, the gap's reason."""

    quantity: str
    error: float
    tolerance: float
    gap: str = ""
    note: str = ""
    """Where the tolerance is not the plain one: how it was obtained (a rounding spread)."""

    @property
    def passed(self) -> bool:
        return bool(self.error <= self.tolerance)


def failures(comparisons: list[Comparison]) -> list[str]:
    """'quantity: error > tolerance' for each comparison that failed."""
    return [f"{c.quantity}: {c.error:.2e} > {c.tolerance:g}" for c in comparisons if not c.passed]


class Judge:
    """Makes Comparisons for one backend and dtype, applying its known gaps. A gap only loosens:
    where the check's own bound is wider (a trajectory's rounding spread), that bound holds."""

    def __init__(self, backend: str, dtype: str):
        self.backend, self.dtype = backend, dtype

    def __call__(self, quantity: str, error: float, tolerance: float) -> Comparison:
        gap = gap_for(self.backend, self.dtype, quantity)
        if gap is None or gap.tolerance <= tolerance:
            return Comparison(quantity, error, tolerance)
        return Comparison(quantity, error, gap.tolerance, gap.reason)

    @property
    def trajectory_precision(self) -> str:
        """The precision the backend's trajectories are computed at: float32 where a known gap
        holds its float64 trajectory losses to float32's bound (it computes layers in float32),
        else its dtype. The reference's predictable steps are measured with a nudge of it."""
        gap = gap_for(self.backend, self.dtype, "trajectory:loss:total")
        coarse = self.dtype == "float64" and gap is not None and gap.tolerance >= TRAJECTORY_LOSS_RTOL["float32"]
        return "float32" if coarse else self.dtype


def make_case(
    spec: Spec, seed: int = 0, mnist_path: Optional[str | Path] = None, batch_size: int = CHECK_BATCH
) -> Case:
    """Weights from the spec's initialiser plus random biases (and offsets, scales and running
    statistics: check_weights); the first training examples."""
    plan = plan_model(spec)
    rng = stream(seed, CHECK_STREAM)
    weights = check_weights(plan, init_weights(plan, spec.init.kernel, seed), rng)
    data = load_dataset(spec, mnist_path)
    labels = None
    if spec.model.conditional:
        labels = one_hot(data.y_train[: TRAJECTORY_STEPS * TRAJECTORY_BATCH], spec.model.conditioning.num_classes)
    x = data.x_train[: TRAJECTORY_STEPS * TRAJECTORY_BATCH]
    batch = Batch(
        x[:batch_size], None if labels is None else labels[:batch_size], draw_noise(spec, plan, batch_size, rng)
    )
    return Case(spec, plan, weights, batch, x, labels)


def check_weights(plan: ModelPlan, weights: Weights, rng: np.random.Generator) -> Weights:
    """Biases drawn too, so bias layouts are exercised; batch-norm scales, offsets and running
    statistics, and moving-average counts and sums, drawn away from their starts (ones and zeros
    would hide a swapped layout, an evaluation that used batch statistics, or a moving average
    that weighs its past wrongly)."""
    moved = {
        "bias": lambda shape: rng.normal(0.0, BIAS_SD, shape),
        "offset": lambda shape: rng.normal(0.0, BIAS_SD, shape),
        "mean": lambda shape: rng.normal(0.0, BIAS_SD, shape),
        "scale": lambda shape: rng.uniform(0.5, 1.5, shape),
        "variance": lambda shape: rng.uniform(0.5, 1.5, shape),
        "count": lambda shape: rng.uniform(0.5, 1.5, shape),
        "sum": lambda shape: rng.normal(0.0, BIAS_SD, shape),
    }
    return {p.name: moved[p.role](p.shape) if p.role in moved else weights[p.name] for p in plan.params}


def relative_error(got: np.ndarray | float, ref: np.ndarray | float, floor: float) -> float:
    """max |got - ref| / max(|ref|, floor), elementwise, as a float (inf on NaN or shape mismatch)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    err = np.abs(got - ref) / np.maximum(np.abs(ref), floor)
    return float(np.nan_to_num(err, nan=np.inf).max()) if err.size else 0.0


def scaled_error(got: np.ndarray, ref: np.ndarray, scale: float = 0.0) -> float:
    """max |got - ref| / max(max |ref|, scale): the error of an array on the scale of its
    largest entry, or on ``scale`` where that is larger."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if not ref.size:
        return 0.0
    return float(np.nan_to_num(np.abs(got - ref).max() / max(np.abs(ref).max(), scale, 1e-300), nan=np.inf))


def layer_gradient_scales(plan: ModelPlan, grads: Weights) -> dict[str, float]:
    """Each trainable array's judging scale: the largest |gradient| over the arrays of its layer.
    An array whose gradient vanishes (a bias straight before batch_norm, which the batch mean
    removes: docs/EQUIVALENCE.md) holds only rounding, which its own scale would magnify."""
    scales = {}
    for layer in plan.layers:
        names = [p.name for p in layer.params if p.trainable and p.name in grads]
        largest = max(
            (float(np.abs(np.asarray(grads[n], dtype=np.float64)).max(initial=0.0)) for n in names), default=0.0
        )
        scales.update(dict.fromkeys(names, largest))
    return scales


# ---------------------------------------------------------------- against the oracle


def compare_loss_terms(judge: Judge, got: dict[str, float], ref: dict[str, float]) -> list[Comparison]:
    """Each term of ``got`` against the oracle's ``ref`` (same names expected)."""
    if list(got) != list(ref):
        return [judge(f"loss terms {list(got)} vs oracle {list(ref)}", float("inf"), 0.0)]
    floor = LOSS_FLOOR_OF_TOTAL * abs(ref["total"])
    return [judge(f"loss:{name}", relative_error(got[name], ref[name], floor), LOSS_RTOL[judge.dtype]) for name in ref]


def check_loss_terms(backend: Backend, case: Case) -> list[Comparison]:
    model = built(backend, case)
    ref = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan)
    return compare_loss_terms(Judge(backend.name, case.spec.dtype), backend.loss_terms(model, case.batch), ref)


def check_encode_decode(backend: Backend, case: Case) -> list[Comparison]:
    """encode (no corruption) and decode of the posterior sample against the oracle (in
    evaluation mode, which reads no layer's draw; family categorical's sample reads the
    batch's temperature among them)."""
    judge, model = Judge(backend.name, case.spec.dtype), built(backend, case)
    clean = Batch(case.batch.x, case.batch.labels, Noise(eps=case.batch.noise.eps, draws=case.batch.noise.draws))
    fwd = oracle.forward(case.spec.replace(corruption=None), case.weights, clean, case.plan)
    expected = fwd.encoded()
    encoded = backend.encode(model, case.batch.x, case.batch.labels)
    tol = LOSS_RTOL[case.spec.dtype]
    out = [judge(f"encode:{k}", scaled_error(encoded.get(k, np.array(np.nan)), v), tol) for k, v in expected.items()]
    labels = None if case.batch.labels is None else repeat_rows(case.batch.labels, fwd.samples)  # z's rows
    decoded = backend.decode(model, fwd.z, labels)
    out.append(judge("decode", scaled_error(decoded, oracle.output(case.spec, fwd.logits)), tol))
    return out


def oracle_total(case: Case, weights: Weights, tape: Optional[Tape] = None) -> float:
    return oracle.loss_terms(case.spec, weights, case.batch, case.plan, tape=tape)["total"]


def held_tape(case: Case) -> Tape:
    """The oracle's tape of the case's training-mode pass (recorded once per case): what it holds
    constant for differentiation (stop_gradient, the codes a quantizer picked), for replaying.
    Recorded again for a case whose weights were replaced (dataclasses.replace keeps the list)."""
    if not case.held or case.held[0][0] is not case.weights:
        tape = Tape()
        oracle_total(case, case.weights, tape)
        case.held[:] = [(case.weights, tape)]
    return case.held[0][1]


def fd_entry(case: Case, name: str, index: int, step: float = FD_STEP) -> float:
    """Central finite difference of the oracle's total along one weight entry, computed once
    per case and step: it depends on the oracle only, not on the backend checked. The values
    the frameworks hold constant for differentiation stay at the case's (held_tape), so the
    quotient is the derivative of the surrogate autodiff differentiates: through a vector
    quantizer, the straight-through estimator's, not that of the piecewise-constant loss."""
    if (name, index, step) not in case.finite_differences:
        case.finite_differences[name, index, step] = _central_difference(case, name, index, step)
    return case.finite_differences[name, index, step]


def fd_error(case: Case, name: str, index: int, gradient: float, scale: float) -> float:
    """|finite difference - gradient| / scale at FD_STEP, or at the FD_RETRY_DIVISOR times
    smaller step where that is smaller and the first missed FD_TOL (tolerances.py)."""
    error = abs(fd_entry(case, name, index) - gradient) / scale
    if error <= FD_TOL:
        return error
    return min(error, abs(fd_entry(case, name, index, FD_STEP / FD_RETRY_DIVISOR) - gradient) / scale)


def _central_difference(case: Case, name: str, index: int, step: float) -> float:
    """The central difference of the oracle's total with the case's held values replayed
    (fd_entry): for a straight-through categorical sample, the one-hot of the case's soft
    sample y0 plus y - y0."""
    values = []
    for sign in (1.0, -1.0):
        moved = dict(case.weights)
        moved[name] = case.weights[name].copy()
        moved[name].flat[index] += sign * step
        values.append(oracle_total(case, moved, held_tape(case).replay()))
    return (values[0] - values[1]) / (2 * step)


def check_gradients_fd(backend: Backend, case: Case, seed: int = 0) -> list[Comparison]:
    """Per weight array: the largest-gradient entry and random ones against finite differences."""
    return compare_gradients_fd(Judge(backend.name, case.spec.dtype), case, gradients(backend, case), seed)


def compare_gradients_fd(judge: Judge, case: Case, grads: Weights, seed: int = 0) -> list[Comparison]:
    """check_gradients_fd of gradients already computed."""
    rng = np.random.default_rng(seed)
    scales = layer_gradient_scales(case.plan, grads)
    out = []
    for param in case.plan.trainable:
        if param.name not in grads or np.shape(grads[param.name]) != param.shape:
            out.append(judge(f"grad-fd:{param.name}", float("inf"), FD_TOL))
            continue
        flat = np.asarray(grads[param.name], dtype=np.float64).ravel()
        scale = scales[param.name] or 1.0
        picks = {int(np.argmax(np.abs(flat)))}
        picks.update(int(i) for i in rng.choice(flat.size, min(FD_SAMPLES_PER_ARRAY - 1, flat.size), replace=False))
        worst = max(fd_error(case, param.name, i, flat[i], scale) for i in sorted(picks))
        out.append(judge(f"grad-fd:{param.name}", worst, FD_TOL))
    return out


# ---------------------------------------------------------------- across backends


def gradients(backend: Backend, case: Case) -> Weights:
    return backend.gradients(built(backend, case), case.batch)[1]


def compare_gradients(
    judge: Judge,
    got: Weights,
    ref: Weights,
    plan: ModelPlan,
    rounding_spread: Optional[Callable[[], dict[str, float]]] = None,
) -> list[Comparison]:
    """Every gradient array against a reference backend's float64 gradients, on its layer's
    scale. In float32, an array that misses GRAD_TOL is held instead to GRAD_SPREAD_MARGIN
    times ``rounding_spread()[name]`` (gradient_rounding_spread: how far the reference's own
    float32 gradients move under nudges of a few ulps) where that is wider, and says so."""
    scales = layer_gradient_scales(plan, ref)
    out = []
    for name in ref:
        error = scaled_error(got.get(name, np.array(np.nan)), ref[name], scales.get(name, 0.0))
        comparison = judge(f"grad:{name}", error, GRAD_TOL[judge.dtype])
        if not comparison.passed and judge.dtype == "float32" and rounding_spread is not None:
            comparison = _held_to_spread(judge, comparison, rounding_spread()[name])
        out.append(comparison)
    return out


def _held_to_spread(judge: Judge, comparison: Comparison, spread: float) -> Comparison:
    bound = GRAD_SPREAD_MARGIN * spread
    if not bound > comparison.tolerance:
        return comparison
    note = f"bound {GRAD_SPREAD_MARGIN:g} x the reference's float32 spread {spread:.2e} under {NUDGE_ULPS}-ulp nudges"
    return dataclasses.replace(judge(comparison.quantity, comparison.error, bound), note=note)


def gradient_rounding_spread(backend: Backend, case: Case, ref: Weights) -> dict[str, float]:
    """Per gradient array, the largest distance (on its layer's scale) between ``ref`` (float64
    gradients at the case) and ``backend``'s gradients in the case's dtype at GRADIENT_NUDGES
    starts, each weight multiplied by 1 +- NUDGE_ULPS units in the last place, the sign drawn
    per weight: where the point lies within rounding of a kink (tolerances.py, GRAD_TOL)."""
    scales = layer_gradient_scales(case.plan, ref)
    spread: dict[str, float] = {}
    for k in range(GRADIENT_NUDGES):
        got = gradients(backend, nudged(case, case.spec.dtype, k))
        for name in ref:
            error = scaled_error(got.get(name, np.array(np.nan)), ref[name], scales.get(name, 0.0))
            spread[name] = max(spread.get(name, 0.0), error)
    return spread


def trajectory_steps(case: Case) -> list[Step]:
    """TRAJECTORY_STEPS batches of TRAJECTORY_BATCH consecutive examples (wrapping around a
    small data set), noise drawn per step (step i's temperature for family categorical)."""
    rng = stream(1, CHECK_STREAM)
    n = len(case.train_x)
    return [
        Step(
            np.arange(i * TRAJECTORY_BATCH, (i + 1) * TRAJECTORY_BATCH) % n,
            draw_noise(case.spec, case.plan, TRAJECTORY_BATCH, rng, step=i),
        )
        for i in range(TRAJECTORY_STEPS)
    ]


def trajectory(backend: Backend, case: Case, steps: int = TRAJECTORY_STEPS) -> Trajectory:
    """Train from the case's weights with the spec's optimizer on the first ``steps`` of the
    same batches. A per-epoch schedule steps every TRAJECTORY_EPOCH_STEPS updates, so the
    trajectory crosses epoch boundaries whatever the spec's data and batch size."""
    model = built(backend, case)
    trainer = backend.trainer(model, case.train_x, case.train_labels, TRAJECTORY_EPOCH_STEPS)
    losses = trainer.run(trajectory_steps(case)[:steps])
    return Trajectory(losses, backend.get_weights(model), backend.device())


def nudged(case: Case, precision: str, draw: int = 0) -> Case:
    """The case with every weight multiplied by 1 +- NUDGE_ULPS units in the last place of
    ``precision``, the sign drawn per weight (draw ``draw``): a start that rounding alone could
    have produced. Random signs, because batch norm undoes a common scale of the kernels before it."""
    eps = float(np.finfo(np.dtype(precision)).eps)
    rng = stream(draw, CHECK_STREAM, NUDGE_KEY)
    weights = {n: v * (1 + NUDGE_ULPS * eps * rng.choice([-1.0, 1.0], np.shape(v))) for n, v in case.weights.items()}
    return dataclasses.replace(case, weights=weights, finite_differences={}, held=[])


def reference_trajectory(backend: Backend, case: Case, precision: Optional[str] = None) -> Trajectory:
    """The reference run, with its rounding spread: how far the same backend's run from the
    case's weights nudged by NUDGE_ULPS units in the last place of ``precision`` (default: the
    case's dtype; Judge.trajectory_precision) lies from it (tolerances.py). Over its predictable
    steps only: where a loss term of the nudged run departs by more than that precision's loss
    tolerance, two correct runs already disagree: the training is chaotic at this precision and later
    steps say nothing about an implementation; both runs are then repeated that far."""
    precision = precision or case.spec.dtype
    moved = nudged(case, precision)
    ref, other = trajectory(backend, case), trajectory(backend, moved)
    loss_tol = trajectory_tolerances(precision, ref.device)[0]
    steps = predictable_steps(other.losses, ref.losses, loss_tol)
    if steps < len(ref.losses):
        ref, other = trajectory(backend, case, steps), trajectory(backend, moved, steps)
    spread = trajectory_errors(other, ref, term_names(case))
    return dataclasses.replace(ref, rounding_spread=spread)


def predictable_steps(other: np.ndarray, ref: np.ndarray, bound: float) -> int:
    """The number of leading steps at which every loss term of the ``other`` (nudged) run lies within
    ``bound`` of the reference's (relative, floor as for loss terms); at least one."""
    per_step = (np.abs(other - ref) / np.maximum(np.abs(ref), loss_floor(ref))).max(axis=1)
    departed = np.flatnonzero(~(per_step <= bound))
    return max(1, int(departed[0])) if departed.size else len(ref)


def loss_floor(losses: np.ndarray) -> float:
    """The floor of a trajectory's relative loss errors: LOSS_FLOOR_OF_TOTAL of its largest total (column 0)."""
    return LOSS_FLOOR_OF_TOTAL * float(np.abs(losses[:, 0]).max())


def trajectory_errors(got: Trajectory, ref: Trajectory, names: tuple[str, ...]) -> dict[str, float]:
    """Per compared quantity: each loss term over the steps (relative, floor as for loss
    terms), and each final weight array (on the array's scale)."""
    if got.losses.shape != ref.losses.shape:
        errors = {"trajectory:loss": float("inf")}
    else:
        floor = loss_floor(ref.losses)
        errors = {
            f"trajectory:loss:{name}": relative_error(got.losses[:, i], ref.losses[:, i], floor)
            for i, name in enumerate(names)
        }
    for name, w in ref.weights.items():
        errors[f"trajectory:{name}"] = scaled_error(got.weights.get(name, np.array(np.nan)), w)
    return errors


def compare_trajectories(judge: Judge, got: Trajectory, ref: Trajectory, names: tuple[str, ...]) -> list[Comparison]:
    """Per-step losses (each term) and final weights against a reference backend's run, each
    held to its tolerance or to ROUNDING_SPREAD_MARGIN times the reference's rounding spread.
    A reference cut to its predictable steps (reference_trajectory) says so in each comparison."""
    loss_tol, weight_tol = trajectory_tolerances(judge.dtype, got.device, ref.device)
    cut = ref.steps < TRAJECTORY_STEPS
    note = f"over the first {ref.steps} of {TRAJECTORY_STEPS} steps, the predictable ones" if cut else ""
    out = []
    for quantity, error in trajectory_errors(got, ref, names).items():
        tolerance = loss_tol if quantity.startswith("trajectory:loss") else weight_tol
        spread = ROUNDING_SPREAD_MARGIN * ref.rounding_spread.get(quantity, 0.0)
        comparison = judge(quantity, error, max(tolerance, spread) if np.isfinite(spread) else tolerance)
        out.append(dataclasses.replace(comparison, note=note) if note else comparison)
    return out


def built(backend: Backend, case: Case) -> object:
    model = backend.build(case.spec)
    backend.set_weights(model, case.weights)
    return model


def term_names(case: Case) -> tuple[str, ...]:
    return loss_term_names(case.spec)
