"""One benchmark cell: (spec, backend, mode, batch size, dtype, precision), in its own process.

This module knows nothing of campaigns: ``run_cell(cell)`` measures one cell in the current
process and returns its result row; ``python -m aebench.bench.cell CELL.json RESULT.json`` is how an
executor (local subprocesses today, a cluster later) runs it in a fresh process. A cell
that fails returns a row with status 'failed' and the reason; what was measured before the
failure stays in the row.

Before its figures are trusted, a cell checks that the steps it timed are the training
step of the equivalence suite: the losses of its first steps must match the backend's
trainer on the same batches, noise and weights (TRAJECTORY_LOSS_RTOL).

The cell's precision is its process's, set before the backend loads and applied once
(aebench.plugins.precision). The row records the framework's switches as it reports them
right after the timed steps (``precision_timed``) and after the verification replay
(``precision_replay``); a cell whose switches are not its precision's at either moment fails,
saying which switch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import resource
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from aebench.bench.data import make_bench_data, pool_size
from aebench.bench.flops import training_step_flops
from aebench.bench.identity import cell_settings
from aebench.bench.parent import die_with_parent
from aebench.bench.peak import device_peak
from aebench.bench.stability import row_figures as stability_figures
from aebench.bench.timing import Protocol, Timing, measure
from aebench.check.tolerances import TRAJECTORY_LOSS_RTOL
from aebench.data.datasets import load_dataset
from aebench.data.noise import layer_draws, stream
from aebench.environment import thread_settings
from aebench.errors import AebenchError
from aebench.losses import term_draws
from aebench.plugins.backend_api import Backend, Noise, Step, check_implements
from aebench.plugins.bench_api import BenchData, Precision, require_mode
from aebench.plugins.discovery import device_sharing_environment
from aebench.plugins.plugin import Plugin
from aebench.plugins.precision import check_switches, set_process_precision
from aebench.plugins.registry import load_backend
from aebench.plugins.registry import plugin as registered_plugin
from aebench.spec.load import load_spec
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import Spec

VERIFY_STEPS = 10  # at most this many first steps are replayed on the backend's trainer


@dataclass(frozen=True)
class Cell:
    """What to measure. ``spec`` is a shipped spec's name or a YAML path; ``dtype`` None keeps
    the spec's; ``steps_per_call`` is used by multi-step modes only; ``peak_fresh_since``
    (UNIX seconds): measure the device's peak again before timing unless it was measured
    since then (--remeasure-peak)."""

    spec: str
    backend: str
    mode: str
    batch_size: int
    dtype: Optional[str] = None
    precision: Precision = field(default_factory=Precision)
    steps_per_call: int = 10
    verify: bool = True
    mnist: Optional[str] = None
    protocol: Protocol = field(default_factory=Protocol)
    peak_fresh_since: Optional[float] = None

    @property
    def key(self) -> str:
        """Identifies the cell within a campaign (resuming skips keys already recorded); its spec
        part is ``spec_key(spec)``, so two spec files with one stem are two cells."""
        precision = self.precision.describe()
        return f"{spec_key(self.spec)}|{self.backend}|{self.mode}|{self.batch_size}|{self.dtype or 'spec'}|{precision}"

    def row_identity(self) -> dict:
        """The columns that name the cell in its result row, whatever became of it."""
        return {
            "key": self.key,
            "spec": spec_key(self.spec),
            "backend": self.backend,
            "mode": self.mode,
            "batch_size": self.batch_size,
            "precision": self.precision.describe(),
        }

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Cell:
        """A Cell from to_json's text (or an older one, whose precision was ``{"tf32": bool}``)."""
        raw = json.loads(text)
        precision = Precision.from_json(raw["precision"])
        return cls(**{**raw, "protocol": Protocol(**raw["protocol"]), "precision": precision})


SPEC_DIGEST_CHARACTERS = 8


def spec_key(spec: str) -> str:
    """A spec's part of a cell key: a shipped spec's name as it is (``vae_toy``); a spec given as
    a path, its file's stem and the first SPEC_DIGEST_CHARACTERS of the sha256 of the path as
    given, normalised (``toy-f4dd5386`` for ``s1/toy.yaml``), so that ``s1/toy.yaml`` and
    ``s2/toy.yaml`` never share a key. The path as given, not as resolved, is hashed: the
    planner, the cell's own process and a Ray worker compute the same key whatever their
    working folder; a spec edited in place keeps its key (its recorded spec_sha256 then says it
    changed, aebench.bench.identity)."""
    stem = Path(spec).stem
    if spec == stem:
        return spec
    digest = hashlib.sha256(os.path.normpath(spec).encode()).hexdigest()[:SPEC_DIGEST_CHARACTERS]
    return f"{stem}-{digest}"


class CellFailed(AebenchError):
    """The cell could not be measured; the message is the recorded reason."""


def run_cell(cell: Cell) -> dict:
    """Measure one cell in this process; always returns a row (status ok, failed or unsupported)."""
    row = {
        **cell.row_identity(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "status": "failed",
        "reason": "",
    }
    start = time.perf_counter()
    try:
        row["settings"] = json.dumps(cell_settings(cell), sort_keys=True)
        _measure_into(row, cell)
    except Exception as exc:  # noqa: BLE001 - every failure becomes the cell's recorded reason
        row["status"], row["reason"] = "failed", failure_reason(exc)
        if not isinstance(exc, AebenchError):
            row["traceback"] = traceback.format_exc(limit=-6)
    row["cell_seconds"] = round(time.perf_counter() - start, 3)
    return row


def _measure_into(row: dict, cell: Cell) -> None:
    spec = load_spec(cell.spec)
    if cell.dtype:
        spec = spec.replace(dtype=cell.dtype)
    row["dtype"] = spec.dtype
    row["optimizer"] = spec.optimizer.implementation

    set_process_precision(cell.precision)  # before the backend loads: it is applied then, once
    backend = load_backend(cell.backend)
    plugin = registered_plugin(cell.backend)
    bench = plugin.bench()
    row.update(
        versions=json.dumps(backend.versions()),
        device=backend.device(),
        mode_description=bench.MODES.get(cell.mode, ""),
        threads=thread_info(),
        device_sharing=json.dumps(device_sharing_environment()),
    )
    require_mode(bench.MODES, cell.mode)
    reason = bench.unsupported(backend, cell.mode)
    if reason:
        row["status"], row["reason"] = "unsupported", reason
        return
    plan = plan_model(spec)
    check_implements(backend, spec)
    dataset = load_dataset(spec, cell.mnist)
    check_host_memory(spec, plan, cell.batch_size, len(dataset.x_train))
    data = make_bench_data(spec, dataset, cell.batch_size, cell.protocol.max_steps)
    row["data"] = dataset.source
    if cell.peak_fresh_since is not None:
        device_peak(plugin, backend, spec.dtype, cell.precision, fresh_since=cell.peak_fresh_since)
    runner = bench.prepare(backend, spec, cell.mode, data, cell.precision, cell.steps_per_call)
    timing = measure(runner, cell.protocol)
    record_switches(row, "precision_timed", plugin, cell.precision, "at the timed steps")
    memory_peak = runner.peak_memory_bytes()
    row.update(timing_figures(timing, plan, cell.batch_size, spec.model.latent.samples))
    row.update(memory_figures(memory_peak))
    row.update(peak_figures(plugin, backend, spec, cell.precision, row["gflops_per_s"]))
    row["losses"], row["loss_steps"] = timing.losses.tolist(), timing.loss_steps.tolist()
    check_finite(timing.losses, timing.loss_steps)
    if cell.verify:
        row.update(verify_against_trainer(backend, spec, data, timing.losses[: timing.consecutive_steps]))
        record_switches(row, "precision_replay", plugin, cell.precision, "after the verification replay")
    row["status"] = "ok"


def record_switches(row: dict, column: str, plugin: Plugin, precision: Precision, when: str) -> None:
    """The framework's precision switches, read now, into ``row[column]`` (JSON); CellFailed
    naming the first one that is not ``precision``'s."""
    found, problem = check_switches(plugin, precision, when)
    row[column] = json.dumps(found, sort_keys=True)
    if problem:
        raise CellFailed(problem)


def timing_figures(timing: Timing, plan: ModelPlan, batch_size: int, samples: int = 1) -> dict:
    """The steady-state figures of a Timing, with the FLOPs counted from the spec's plan (the
    decoder's ``samples`` times: model.latent.samples)."""
    step = timing.median_step_seconds
    flops = training_step_flops(plan, batch_size, samples)
    return {
        "steps_per_call": timing.steps_per_call,
        "warmup_calls": timing.warmup_calls,
        "calls_per_block": timing.calls_per_block,
        "blocks": len(timing.block_step_seconds),
        "warmup_blocks": len(timing.warmup_block_seconds),
        "first_call_s": timing.first_call_seconds,
        "compile_s": timing.first_call_overhead_seconds,
        "median_step_ms": step * 1e3,
        "iqr_step_ms": timing.iqr_step_seconds * 1e3,
        "cv": timing.cv,
        "block_step_ms": json.dumps([round(b * 1e3, 6) for b in timing.block_step_seconds]),
        "warmup_block_ms": json.dumps([round(b * 1e3, 6) for b in timing.warmup_block_seconds]),
        **stability_figures(timing.stability, timing.load),
        "samples_per_s": batch_size / step,
        "flops_per_step": flops,
        "gflops_per_s": flops / step / 1e9,
        "steps_timed": len(timing.block_step_seconds) * timing.steps_per_block,
        "loss_first": float(timing.losses[0]),
        "loss_last": float(timing.losses[-1]),
    }


def memory_figures(device_peak: Optional[int]) -> dict:
    """Peak device memory, or the process' peak resident memory where the device is the host."""
    if device_peak is not None:
        return {"peak_memory_mb": device_peak / 2**20, "memory_source": "device"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_mb": rss_kib / 1024, "memory_source": "process peak RSS (host device)"}


def peak_figures(plugin: Plugin, backend: Backend, spec: Spec, precision: Precision, achieved_gflops: float) -> dict:
    """The device peak the cell is divided by (measured again when the cell exceeds it), when
    and under what load it was measured, and the fraction reached."""
    return device_peak(plugin, backend, spec.dtype, precision, achieved_gflops=achieved_gflops).row_figures(
        achieved_gflops
    )


def check_finite(losses: np.ndarray, steps: np.ndarray) -> None:
    bad = np.flatnonzero(~np.isfinite(losses))
    if len(bad):
        raise CellFailed(f"non-finite loss ({losses[bad[0]]}) at step {steps[bad[0]]}")


def verify_against_trainer(backend, spec: Spec, data: BenchData, timed_losses: np.ndarray) -> dict:
    """Replay the first steps on the backend's trainer (the equivalence-checked step);
    ``timed_losses`` are the losses of steps 1, 2, 3, ... as the runner took them."""
    n = min(VERIFY_STEPS, len(timed_losses))
    model = backend.build(spec)
    backend.set_weights(model, data.weights)
    reference = backend.trainer(model, data.x, data.labels, data.steps_per_epoch).run(bench_steps(data, n))[:, 0]
    error = np.abs(timed_losses[:n] - reference) / np.maximum(np.abs(reference), 1e-12)
    worst = float(error.max())
    tolerance = TRAJECTORY_LOSS_RTOL[spec.dtype]
    if worst > tolerance:
        step = int(error.argmax())
        raise CellFailed(
            f"the timed steps are not the checked training step: loss at step {step + 1} is "
            f"{timed_losses[step]:.9g}, the trainer's {reference[step]:.9g} "
            f"(relative {worst:.2e} > {tolerance:g})"
        )
    return {"verified_steps": n, "verify_max_rel_diff": worst}


def bench_steps(data: BenchData, n: int) -> list[Step]:
    """The first ``n`` steps of a BenchData as trainer Steps."""
    pool = len(data.order)

    def pick(a, k):
        return None if a is None else a[k % pool]

    return [
        Step(
            data.order[k % pool],
            Noise(pick(data.eps, k), pick(data.corruption, k), {name: pick(a, k) for name, a in data.draws.items()}),
        )
        for k in range(n)
    ]


def check_host_memory(spec: Spec, plan: ModelPlan, batch_size: int, n_examples: int) -> None:
    """Fail early, with the figures, when the batch pool cannot fit in host memory."""
    per_example = int(np.prod(plan.data_shape)) * (2 if spec.corruption is not None else 1)
    samples = spec.model.latent.samples
    per_example += sum(rows * math.prod(shape) for rows, shape in layer_draws(plan, samples).values())
    one_batch_of_term_draws = term_draws(spec.loss, plan, batch_size, stream(0))
    per_example += sum(draw.size for draw in one_batch_of_term_draws.values()) // batch_size + 1
    per_example += plan.latent_size * samples + 1
    needed = pool_size(n_examples, batch_size) * batch_size * per_example * 8
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if needed > available:
        raise CellFailed(
            f"out of memory: batch size {batch_size} needs {needed / 2**30:.1f} GiB of host memory "
            f"for its batches and noise; {available / 2**30:.1f} GiB is free"
        )


OOM_MARKERS = (
    "out of memory",
    "resource_exhausted",
    "resourceexhausted",
    "oom",
    "memoryerror",
    "cannot allocate memory",
    "failed to allocate",
)


def failure_reason(exc: BaseException) -> str:
    """One line: 'out of memory: ...' when it is one, else the exception type and message."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, AebenchError):
        return text
    line = f"{type(exc).__name__}: {text}"[:500]
    if isinstance(exc, MemoryError) or any(m in line.lower() for m in OOM_MARKERS):
        return f"out of memory: {line}"
    return line


def thread_info() -> str:
    """Thread settings and the loaded framework's thread pools, with the usable CPUs."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return json.dumps({"cpus_usable": usable, **thread_settings()})


def main(argv: list[str]) -> int:
    """``python -m aebench.bench.cell CELL.json RESULT.json``: the result is written atomically.
    The process dies with the executor that started it (aebench.bench.parent)."""
    die_with_parent()
    cell_path, result_path = map(Path, argv)
    row = run_cell(Cell.from_json(cell_path.read_text()))
    row["python"] = platform.python_version()
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    os.replace(tmp, result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
