"""``aebench check``: the equivalence comparisons, run on the frameworks installed here.

For each spec and dtype, every selected backend is compared with the NumPy oracle (loss
terms, encoder and decoder outputs, float64 gradients by finite differences) and with a
reference backend (gradients against its float64 gradients, a 50-step Adam trajectory
against its trajectory). A backend that is not installed is reported as skipped, with
the reason; a backend that raises is a failure with the error, and the others go on.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import cache, partial
from typing import Optional

from aebench.check import equivalence as eq
from aebench.errors import AebenchError, NotImplementedByBackend
from aebench.plugins.backend_api import Backend, check_implements
from aebench.plugins.discovery import registered_plugins
from aebench.plugins.registry import backend_info, load_backend, plugin
from aebench.spec.load import list_specs, load_spec
from aebench.spec.schema import did_you_mean
from aebench.spec.types import Spec

KINDS = {
    "loss": "loss terms vs oracle",
    "encode": "encode vs oracle",
    "decode": "decode vs oracle",
    "grad-fd": "float64 grads vs finite differences",
    "grad": "grads vs reference float64",
    "trajectory:loss": "50-step losses vs reference",
    "trajectory": "50-step weights vs reference",
}


@dataclass(frozen=True)
class Row:
    """One compared quantity (or one skipped or failed backend)."""

    spec: str
    backend: str
    dtype: str
    quantity: str
    error: Optional[float]
    tolerance: Optional[float]
    verdict: str  # pass | FAIL | skip
    note: str = ""


def choose_backends(
    names: Optional[list[str]], progress: Callable[[str], None] = lambda _: None
) -> tuple[dict[str, Backend], list[Row]]:
    """Load the named (default: all registered) backends one by one, telling ``progress``
    before and after each (a framework takes seconds to load); skipped ones become rows."""
    registered = registered_plugins()
    for name in names or []:
        if name not in registered:
            raise AebenchError(
                f"--backends: no backend '{name}'{did_you_mean(name, registered)}; "
                f"registered: {', '.join(sorted(registered))}"
            )
    loaded, skipped = {}, []
    for name in names or sorted(registered, key=reference_rank):
        progress(f"loading {name} ...")
        start = time.perf_counter()
        backend, reason = _load(name)
        if backend is None:
            skipped.append(Row("*", name, "*", "backend", None, None, "skip", reason))
            progress(f"skipping {name}: {reason}")
            continue
        loaded[name] = backend
        progress(f"loaded {name} in {time.perf_counter() - start:.1f} s ({backend.device()})")
    return loaded, skipped


def _load(name: str) -> tuple[Optional[Backend], str]:
    """The loaded backend, or None and why it cannot load here."""
    info = backend_info(name)
    if not info.available:
        return None, info.reason
    try:
        return load_backend(name), ""
    except AebenchError as exc:
        return None, str(exc)


def reference_rank(name: str) -> tuple[int, str]:
    """Sort key of backends as references: the plugin's reference_rank, then the name."""
    return (plugin(name).reference_rank, name)


def run_check(
    specs: list[Spec],
    backends: dict[str, Backend],
    dtypes: Iterable[str],
    progress: Callable[[str], None] = lambda _: None,
) -> list[Row]:
    """Every comparison for every spec, dtype and backend."""
    rows = []
    if not backends:
        return []
    dtypes = list(dtypes)
    done, total, start = 0, len(specs) * len(dtypes) * len(backends), time.perf_counter()
    for spec in specs:
        able, lacking = _implementing(spec, backends)
        rows += lacking
        done += len(lacking) * len(dtypes)
        if not able:
            continue
        reference = min(able, key=reference_rank)
        case64 = eq.make_case(spec.replace(dtype="float64"))
        ref_grads = _guard(partial(eq.gradients, backends[reference], case64))
        for dtype in dtypes:
            case = case64 if dtype == "float64" else eq.make_case(spec.replace(dtype=dtype))
            ref_spread = cache(partial(eq.gradient_rounding_spread, backends[reference], case, ref_grads))
            ref_traj = cache(partial(_reference_trajectory, backends[reference], case))
            for name, backend in able.items():
                done += 1
                progress(f"[{done}/{total}] {spec.name} {dtype} {name} ({time.perf_counter() - start:.0f} s)")
                comparisons = _comparisons(backend, case, reference, ref_grads, ref_spread, ref_traj)
                rows += _rows(spec.name, name, dtype, comparisons)
    return rows


def _implementing(spec: Spec, backends: dict[str, Backend]) -> tuple[dict[str, Backend], list[Row]]:
    """The backends that implement every layer of ``spec``, and a skip row for each that does not."""
    able, lacking = {}, []
    for name, backend in backends.items():
        try:
            check_implements(backend, spec)
        except NotImplementedByBackend as exc:
            lacking.append(Row(spec.name, name, "*", "layers", None, None, "skip", str(exc)))
        else:
            able[name] = backend
    return able, lacking


def _comparisons(backend: Backend, case: eq.Case, reference: str, ref_grads, ref_spread, ref_traj) -> list:
    """The comparisons of one backend, or ('raised', message) where it raised. ``ref_spread``
    measures the reference's float32 gradient spread when a comparison needs it (eq.compare_gradients);
    ``ref_traj(precision)`` gives the reference trajectory nudged at that precision."""
    judge = eq.Judge(backend.name, case.spec.dtype)
    out = []
    steps = [lambda: eq.check_loss_terms(backend, case), lambda: eq.check_encode_decode(backend, case)]
    if case.spec.dtype == "float64":
        steps.append(lambda: eq.check_gradients_fd(backend, case))
    if isinstance(ref_grads, dict) and not (backend.name == reference and case.spec.dtype == "float64"):
        grads = partial(eq.gradients, backend, case)
        steps.append(lambda: eq.compare_gradients(judge, grads(), ref_grads, case.plan, ref_spread))
    traj = ref_traj(judge.trajectory_precision) if backend.name != reference else None
    if isinstance(traj, eq.Trajectory):
        names, ref_steps = eq.term_names(case), traj.steps
        steps.append(lambda: eq.compare_trajectories(judge, eq.trajectory(backend, case, ref_steps), traj, names))
    for step in steps:
        result = _guard(step)
        out.extend(result if isinstance(result, list) else [result])
    for label, ref in (("reference gradients", ref_grads), ("reference trajectory", traj)):
        if isinstance(ref, tuple):
            out.append(("raised", f"{reference} ({label}): {ref[1]}"))
    return out


def _reference_trajectory(reference: Backend, case: eq.Case, precision: str):
    """The reference's trajectory nudged at ``precision``, or ('raised', message)."""
    return _guard(partial(eq.reference_trajectory, reference, case, precision))


def _guard(fn: Callable):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - a backend that raises is a failed check, not a crash
        return ("raised", f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}")


def _rows(spec: str, backend: str, dtype: str, comparisons: list) -> list[Row]:
    rows = []
    for c in comparisons:
        if isinstance(c, tuple):
            rows.append(Row(spec, backend, dtype, "raised", None, None, "FAIL", c[1]))
        else:
            rows.append(
                Row(
                    spec,
                    backend,
                    dtype,
                    c.quantity,
                    c.error,
                    c.tolerance,
                    "pass" if c.passed else "FAIL",
                    "; ".join(filter(None, [f"known gap: {c.gap}" if c.gap else "", c.note])),
                )
            )
    return rows


def kind_of(quantity: str) -> str:
    if quantity.startswith("trajectory:loss"):
        return "trajectory:loss"
    return quantity.split(":")[0]


def summarize(rows: list[Row]) -> list[Row]:
    """One row per (spec, backend, dtype, kind of quantity): the member with the largest
    error/tolerance ratio, FAIL if any member failed."""
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        groups.setdefault((row.spec, row.backend, row.dtype, kind_of(row.quantity)), []).append(row)
    out = []
    for (spec, backend, dtype, kind), members in groups.items():
        worst = max(members, key=_badness)
        verdict = "FAIL" if any(m.verdict == "FAIL" for m in members) else worst.verdict
        label = KINDS.get(kind, kind)
        detail = worst.quantity if len(members) > 1 and worst.quantity != kind else ""
        note = "; ".join(filter(None, [f"worst: {detail}" if detail else "", worst.note]))
        out.append(Row(spec, backend, dtype, label, worst.error, worst.tolerance, verdict, note))
    return out


def _badness(row: Row) -> float:
    if row.verdict == "FAIL" and row.error is None:
        return float("inf")
    if row.error is None or not row.tolerance:
        return -1.0
    return row.error / row.tolerance


def format_table(rows: list[Row]) -> str:
    header = ("spec", "backend", "dtype", "quantity", "max rel error", "tolerance", "verdict")
    lines = [header] + [
        (
            r.spec,
            r.backend,
            r.dtype,
            r.quantity,
            _num(r.error),
            _num(r.tolerance),
            r.verdict + (f"  ({r.note})" if r.note else ""),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)) + "  " + line[-1] for line in lines)


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2e}"


def to_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)


def load_specs(names: Optional[list[str]]) -> list[Spec]:
    return [load_spec(name) for name in (names or list_specs())]
