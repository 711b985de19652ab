"""Benchmark cells as MLflow runs: one experiment per campaign, one run per cell.

Called by the campaign process after a cell's row is stored (the results folder is the
record; MLflow is a view of it), through tracking.record, so a cell is written as a bundle
in ``results/<campaign>/mlflow/<cell>/`` first and logged when MLflow answers; ``aebench log
results/<campaign>/mlflow`` logs what was kept. Runs carry the same tags as train runs
(spec, backend, framework, mode, dtype, precision), so the UI groups one spec's cells, and
``aebench.kind`` = ``bench``. A run starts when its cell started (the row's ``started``) and
lasts the cell's ``cell_seconds``, not the time it took to log. Its params name the steps its
loss curve covers: ``steps_timed`` (the timed steps) and ``steps_run`` (the curve's last step:
warm-up and timed), which ``aebench compare`` warns about where they differ. A failed cell
carries its reason as the tag ``aebench.end_reason`` (tracking.end_tags, as train runs).

A tracking server found hung (a deadline passed, LogOutcome.hung) is not tried again for the
rest of the campaign: later cells keep their bundles with one line saying so, without waiting.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from aebench.bench.cell import Cell
from aebench.bench.stability import row_stability
from aebench.bench.store import safe_name
from aebench.errors import AebenchError
from aebench.plugins.registry import framework_of
from aebench.spec.load import load_spec
from aebench.spec.types import Spec
from aebench.track.bundle import RunRecord, now_ms
from aebench.track.tracking import (
    EXPERIMENT_PREFIXES,
    KIND_TAG,
    MAX_TAG_CHARS,
    LogOutcome,
    end_tags,
    flatten,
    not_tried_again,
    record,
    run_tags,
    spec_params,
)

TIMING_METRICS = {
    "median_step_ms": "time/step_median_ms",
    "iqr_step_ms": "time/step_iqr_ms",
    "cv": "time/step_cv",
    "samples_per_s": "time/samples_per_second",
    "first_call_s": "time/first_call_seconds",
    "compile_s": "time/compile_seconds",
    "gflops_per_s": "flops/achieved_gflops",
    "flops_per_step": "flops/per_step",
    "device_peak_gflops": "flops/device_peak_gflops",
    "peak_fraction": "flops/peak_fraction",
    "peak_memory_mb": "memory/peak_mb",
    "verify_max_rel_diff": "verify/max_rel_diff",
    "cell_seconds": "time/cell_seconds",
    "ci_low_ms": "time/step_ci_low_ms",
    "ci_high_ms": "time/step_ci_high_ms",
    "ci_rel_width": "time/step_ci_rel_width",
}


KIND = "bench"
LOSS_METRIC = "train/total"  # the loss curve, by step
STEPS_TIMED, STEPS_RUN = "steps_timed", "steps_run"  # params: the steps timed, the loss curve's last step
STABILITY_TAG, UNSTABLE_REASON_TAG = "stability", "unstable_reason"  # a measured cell's verdict


def experiment_name(campaign: str) -> str:
    """One MLflow experiment per campaign for bench cells."""
    return f"{EXPERIMENT_PREFIXES[KIND]}{campaign}"


def cell_times(row: dict) -> tuple[int, int]:
    """(start, end) of the cell in ms since the epoch: its row's ``started`` (ISO time; one without
    a zone is UTC) and that plus ``cell_seconds``. A row without a readable ``started`` ends now."""
    seconds = row.get("cell_seconds")
    duration = round(1000 * seconds) if isinstance(seconds, (int, float)) and seconds >= 0 else 0
    try:
        started = datetime.fromisoformat(str(row["started"]))
    except (KeyError, ValueError):
        end = now_ms()
        return end - duration, end
    if started.tzinfo is None:
        started = started.replace(tzinfo=timezone.utc)
    start = round(started.timestamp() * 1000)
    return start, start + duration


def step_params(row: dict) -> dict[str, str]:
    """The steps a cell's loss curve covers: ``steps_timed`` and ``steps_run`` (its last step),
    where the row has them."""
    params = {}
    if isinstance(row.get("steps_timed"), (int, float)):
        params[STEPS_TIMED] = str(int(row["steps_timed"]))
    if row.get("loss_steps"):
        params[STEPS_RUN] = str(int(row["loss_steps"][-1]))
    return params


def stability_tags(row: dict) -> dict[str, str]:
    """A measured cell's verdict (aebench.bench.stability: firm or unstable, and why) as tags."""
    if row.get("status") != "ok" or not isinstance(row.get("block_step_ms"), str):
        return {}
    stability = row_stability(row)
    return {STABILITY_TAG: stability.label, UNSTABLE_REASON_TAG: stability.reason()[:MAX_TAG_CHARS]}


def switch_params(row: dict) -> dict[str, str]:
    """The precision switches a cell read back, as params: ``precision.timed.<switch>`` (right
    after its timed steps) and ``precision.replay.<switch>`` (after its verification replay),
    where the row has them (a cell that failed before has fewer)."""
    params: dict[str, str] = {}
    for column, prefix in (("precision_timed", "precision.timed"), ("precision_replay", "precision.replay")):
        try:
            switches = json.loads(row.get(column) or "{}")
        except ValueError:
            continue
        params.update(flatten(switches, prefix) if isinstance(switches, dict) else {})
    return params


def cell_record(row: dict, cell_spec: str, campaign: str, environment: dict, files: dict[str, Path]) -> RunRecord:
    """The MLflow run of one cell's row: params, tags, timing metrics, the loss curve
    (metric train/total by step: every warm-up step, then each timed block's last) and ``files``
    as artifacts; it starts and ends when the cell did (cell_times), its metrics stamped at its end."""
    spec = loaded_spec(cell_spec, row.get("dtype"))
    params = {
        "backend": row["backend"],
        "mode": row["mode"],
        "batch_size": str(row["batch_size"]),
        "precision": row.get("precision", ""),
        "precision.tf32": str(row.get("precision") == "tf32").lower(),
        **switch_params(row),
        "steps_per_call": str(row.get("steps_per_call", "")),
        "optimizer.implementation_used": str(row.get("optimizer", "")),
        **step_params(row),
    }
    environment = {
        **environment,
        "device": row.get("device", "unknown"),
        "hostname": row.get("host", environment.get("hostname", "")),
        "versions": {**environment.get("versions", {}), **json.loads(row.get("versions") or "{}")},
    }
    if spec is not None:
        params.update(spec_params(spec))
        tags = run_tags(
            spec, row["backend"], framework_of(row["backend"]), row["mode"], params["precision"], environment
        )
    else:
        tags = {"spec": row["spec"], "backend": row["backend"], "mode": row["mode"]}
    reason = row.get("reason") or ""
    status = "FINISHED" if row["status"] in ("ok", "unsupported") else "FAILED"
    tags.update(
        {
            KIND_TAG: KIND,
            "campaign": campaign,
            "cell": row["key"],
            "status": row["status"],
            "reason": reason[:MAX_TAG_CHARS],
            **stability_tags(row),
            "mlflow.note.content": f"{row['key']}: {row['status']} {reason}".strip(),
            **end_tags(status, reason),
        }
    )
    start, end = cell_times(row)
    run = RunRecord(
        experiment=experiment_name(campaign),
        run_name=row["key"].replace("|", " "),
        params=params,
        tags=tags,
        status=status,
        artifacts=dict(files),
        start_time=start,
        end_time=end,
    )
    run.add_metrics(
        {
            name: float(row[column])
            for column, name in TIMING_METRICS.items()
            if isinstance(row.get(column), (int, float))
        },
        timestamp=end,
    )
    for step, loss in zip(row.get("loss_steps", []), row.get("losses", [])):
        run.add_metrics({LOSS_METRIC: loss}, step=step, timestamp=end)
    return run


def loaded_spec(name: str, dtype: Optional[str]) -> Optional[Spec]:
    """The cell's resolved spec, or None when it does not load (the row says why)."""
    try:
        spec = load_spec(name)
    except AebenchError:
        return None
    return spec.replace(dtype=dtype) if dtype else spec


def track_cell(
    row: dict, cell_spec: str, campaign_folder: Path, tracking_uri: Optional[str], log: bool, not_tried: str = ""
) -> LogOutcome:
    """Bundle the cell (results/<campaign>/mlflow/<cell>/) and log it unless ``log`` is False
    (``not_tried``: tracking.record's)."""
    environment = json.loads((campaign_folder / "environment.json").read_text())
    files = {
        "cell.json": campaign_folder / "cells" / f"{safe_name(row['key'])}.json",
        "environment.json": campaign_folder / "environment.json",
    }
    run = cell_record(row, cell_spec, campaign_folder.name, environment, files)
    return record(run, campaign_folder / "mlflow" / safe_name(row["key"]), tracking_uri, log=log, not_tried=not_tried)


@dataclass(frozen=True)
class CellTracker:
    """A campaign's tracker (aebench.bench.campaign.CellTracker): each cell is bundled under
    results/<campaign>/mlflow/ and logged to MLflow at ``uri`` (None:
    tracking.resolve_tracking_uri) unless ``log`` is False. Once a cell finds the server hung,
    the later cells are kept without trying it (``hung`` holds that outcome)."""

    uri: Optional[str] = None
    log: bool = True
    hung: list[LogOutcome] = field(default_factory=list, init=False, compare=False, repr=False)

    def __call__(self, row: dict, cell: Cell, campaign_folder: Path) -> str:
        not_tried = not_tried_again(self.hung[0]) if self.hung else ""
        outcome = track_cell(row, cell.spec, campaign_folder, self.uri, self.log, not_tried)
        if outcome.hung:
            self.hung.append(outcome)
        return outcome.message() if self.log else f"MLflow bundle: {outcome.bundle_dir}"
