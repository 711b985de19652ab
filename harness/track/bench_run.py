"""Benchmark cells as MLflow runs: one experiment per campaign, one run per cell.

Called by the campaign process after a cell's row is stored (the results folder is the
record; MLflow is a view of it), through tracking.record, so a cell is written as a bundle
in ``results/<campaign>/mlflow/<cell>/`` first and logged when MLflow answers; ``aebench log
results/<campaign>/mlflow`` logs what was kept. Runs carry the same tags as train runs
(spec, backend, framework, mode, dtype, precision), so the UI groups one spec's cells.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aebench.bench.cell import Cell
from aebench.bench.store import safe_name
from aebench.errors import AebenchError
from aebench.plugins.registry import framework_of
from aebench.spec.load import load_spec
from aebench.spec.types import Spec
from aebench.track.bundle import RunRecord
from aebench.track.tracking import LogOutcome, record, run_tags, spec_params

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
}


def experiment_name(campaign: str) -> str:
    return f"aebench-bench/{campaign}"


def cell_record(row: dict, cell_spec: str, campaign: str, environment: dict, files: dict[str, Path]) -> RunRecord:
    """The MLflow run of one cell's row: params, tags, timing metrics, the loss curve
    (metric train/total by step: every warm-up step, then each timed block's last) and ``files`` as artifacts."""
    spec = loaded_spec(cell_spec, row.get("dtype"))
    params = {
        "backend": row["backend"],
        "mode": row["mode"],
        "batch_size": str(row["batch_size"]),
        "precision": row.get("precision", ""),
        "precision.tf32": str(row.get("precision") == "tf32").lower(),
        "steps_per_call": str(row.get("steps_per_call", "")),
        "optimizer.implementation_used": str(row.get("optimizer", "")),
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
    tags.update(
        {
            "campaign": campaign,
            "cell": row["key"],
            "status": row["status"],
            "reason": reason[:5000],
            "mlflow.note.content": f"{row['key']}: {row['status']} {reason}".strip(),
        }
    )
    run = RunRecord(
        experiment=experiment_name(campaign),
        run_name=row["key"].replace("|", " "),
        params=params,
        tags=tags,
        status="FINISHED" if row["status"] in ("ok", "unsupported") else "FAILED",
        artifacts=dict(files),
    )
    run.add_metrics(
        {
            name: float(row[column])
            for column, name in TIMING_METRICS.items()
            if isinstance(row.get(column), (int, float))
        }
    )
    for step, loss in zip(row.get("loss_steps", []), row.get("losses", [])):
        run.add_metrics({"train/total": loss}, step=step)
    return run


def loaded_spec(name: str, dtype: Optional[str]) -> Optional[Spec]:
    """The cell's resolved spec, or None when it does not load (the row says why)."""
    try:
        spec = load_spec(name)
    except AebenchError:
        return None
    return spec.replace(dtype=dtype) if dtype else spec


def track_cell(row: dict, cell_spec: str, campaign_folder: Path, tracking_uri: Optional[str], log: bool) -> LogOutcome:
    """Bundle the cell (results/<campaign>/mlflow/<cell>/) and log it unless ``log`` is False."""
    environment = json.loads((campaign_folder / "environment.json").read_text())
    files = {
        "cell.json": campaign_folder / "cells" / f"{safe_name(row['key'])}.json",
        "environment.json": campaign_folder / "environment.json",
    }
    run = cell_record(row, cell_spec, campaign_folder.name, environment, files)
    return record(run, campaign_folder / "mlflow" / safe_name(row["key"]), tracking_uri, log=log)


@dataclass(frozen=True)
class CellTracker:
    """A campaign's tracker (aebench.bench.campaign.CellTracker): each cell is bundled under
    results/<campaign>/mlflow/ and logged to MLflow at ``uri`` (None:
    tracking.resolve_tracking_uri) unless ``log`` is False."""

    uri: Optional[str] = None
    log: bool = True

    def __call__(self, row: dict, cell: Cell, campaign_folder: Path) -> str:
        outcome = track_cell(row, cell.spec, campaign_folder, self.uri, self.log)
        return outcome.message() if self.log else f"MLflow bundle: {outcome.bundle_dir}"
