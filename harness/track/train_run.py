"""A ``train`` run as an MLflow run: the record, per-epoch metrics, quality, figures, bundle.

The training loop (aebench.train.loop) reports to one TrackedRun, its listener; the run is
begun and ended around the training by tracked_training:

    with tracked_training(spec, backend, data, out, options) as run:
        train(spec, backend, data, out, progress, listener=run, quality=options.quality)

The record is written to ``<out>/mlflow_bundle`` before the first epoch and rewritten after
every epoch (status RUNNING), so a process that dies keeps a bundle that ``aebench log`` can
log. At the end the test-split quality the loop reported (quality.json), the loss curves and
every figure are added, and the run is logged with tracking.record (or kept as a bundle where
MLflow is missing or does not answer). A diverged or interrupted training is logged as FAILED
or KILLED with everything measured before, and the reason as the tag ``aebench.end_reason``
(tracking.end_tags, as bench cells). The run (tag ``aebench.kind`` = ``train``, experiment
``aebench/<spec>``) starts when tracked_training's block is entered and ends when it is left.

Stopping: Ctrl-C (SIGINT) or, where the command turns it into Terminated, SIGTERM ends the run
as KILLED. However a run ends, its final status is written to the bundle first, before the
figures and before MLflow is contacted, so a second signal during that finishing cuts it
short (TrainingInterrupted). Under aebench.stopping.signals_stop_training (``aebench train``)
the second signal never leaves the bundle RUNNING, however soon after the first it comes: it is
held until the final status is written (aebench.stopping.held).

A disk that fills up (ENOSPC, EDQUOT, or EFBIG under a file size limit) ends the bundle as
FAILED with the reason, writing nothing more than run.json: the bundle holds a small space
reserve from its start (bundle.reserve_space) that is given back for that last write. The
user gets one line (aebench.errors.DiskFull, exit 1), never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from aebench.data.datasets import Dataset
from aebench.environment import environment_info
from aebench.errors import DiskFull
from aebench.plugins.backend_api import Backend, loss_term_names
from aebench.plugins.precision import process_precision
from aebench.plugins.registry import framework_of, precision_switches
from aebench.scoring import QualitySettings
from aebench.spec.types import Spec
from aebench.stopping import held
from aebench.track.bundle import (
    RUN_FILE,
    RunRecord,
    copied_artifacts,
    disk_full_cause,
    disk_full_message,
    now_ms,
    release_space,
    reserve_space,
    write_bundle,
)
from aebench.track.tracking import (
    EXPERIMENT_PREFIXES,
    KIND_TAG,
    LogOutcome,
    end_tags,
    failure_text,
    flatten,
    record,
    resolve_tracking_uri,
    run_tags,
    spec_params,
)
from aebench.train.images import run_heading, write_loss_curves

BUNDLE_DIR = "mlflow_bundle"
TRAIN_MODE = "train"
KIND = "train"


@dataclass(frozen=True)
class TrackingOptions:
    """tracking_uri: None for tracking.resolve_tracking_uri's default; log: False writes the
    bundle only; quality: how the test split is scored (``aebench train`` passes it to
    loop.train)."""

    tracking_uri: Optional[str] = None
    log: bool = True
    quality: QualitySettings = QualitySettings()


class TrainingInterrupted(KeyboardInterrupt):
    """A training stopped by a signal, raised once its run is ended: its folder ``out``, the
    ``epochs`` finished, ``outcome`` (what became of its MLflow run; ``final_status`` its
    status) and ``signal_name``, SIGINT (Ctrl-C) or SIGTERM (Terminated)."""

    def __init__(self, out: Path, epochs: int, outcome: LogOutcome, signal_name: str = "SIGINT"):
        super().__init__(f"interrupted after {epochs} epoch(s); run folder {out}")
        self.out, self.epochs, self.outcome, self.signal_name = out, epochs, outcome, signal_name


STOPPED = {"SIGINT": "interrupted (SIGINT, Ctrl-C)", "SIGTERM": "terminated (SIGTERM)"}


def signal_of(exc: KeyboardInterrupt) -> str:
    """SIGTERM for Terminated (or a training it stopped), else SIGINT."""
    return getattr(exc, "signal_name", "SIGINT")


def experiment_name(spec: Spec) -> str:
    """One MLflow experiment per spec for train runs."""
    return f"{EXPERIMENT_PREFIXES[KIND]}{spec.name}"


class TrackedRun:
    """The tracking side of a training: the TrainingListener (aebench.train.loop) that records
    what the loop reports in the run's record and bundle, and ends the run. Made and ended by
    tracked_training; ``outcome`` is what became of its MLflow run once it has ended."""

    def __init__(self, spec: Spec, out: Path, run: RunRecord, bundle_dir: Path, options: TrackingOptions):
        self.spec, self.out, self.run, self.bundle_dir, self.options = spec, out, run, bundle_dir, options
        self.rows: list[dict] = []
        self.quality: dict[str, float] = {}
        self._outcome: Optional[LogOutcome] = None

    @property
    def epochs(self) -> int:
        """The epochs finished (0 before the first)."""
        return self.rows[-1]["epoch"] if self.rows else 0

    @property
    def outcome(self) -> LogOutcome:
        """What became of the MLflow run; only once the run has ended."""
        if self._outcome is None:
            raise RuntimeError("the run has not ended yet")
        return self._outcome

    def epoch(self, row: dict) -> None:
        """The row's metrics at its epoch, and the bundle rewritten (still RUNNING)."""
        self.rows.append(row)
        self.run.add_metrics(epoch_metrics(row), step=row["epoch"])
        write_bundle(self.run, self.bundle_dir)

    def scoring(self, params: dict[str, str]) -> None:
        """The quality step's settings as params of the run."""
        self.run.params.update(params)

    def scored(self, metrics: dict[str, float]) -> None:
        """The quality metrics, added to the run when it ends."""
        self.quality.update(metrics)

    def finish(self, status: str, reason: str = "") -> None:
        """End the run as ``status`` (_end, before anything slow), add quality (its file written
        by the loop), curves, figures and files, then record it (bundle, and MLflow unless
        switched off). A signal meanwhile raises TrainingInterrupted."""
        try:
            _end(self.run, status, reason, self.bundle_dir)
            self._outcome = self._record()
        except KeyboardInterrupt as exc:
            raise _stopped_while_finishing(exc, self.run, self.out, self.epochs, self.options.tracking_uri) from exc

    def _record(self) -> LogOutcome:
        run, out, rows = self.run, self.out, self.rows
        if self.quality:
            run.add_metrics({f"quality/{k}": v for k, v in self.quality.items()}, step=self.epochs)
            run.artifacts["metrics/quality.json"] = out / "quality.json"
        if rows:
            run.add_metrics({"time/train_seconds": sum(r["seconds"] for r in rows)}, step=self.epochs)
            heading = run_heading(self.spec.name, run.params["backend"], self.epochs)
            write_loss_curves(rows, loss_term_names(self.spec), out / "loss_curves.png", heading)
        for name in ("spec.yaml", "metrics.csv", "metrics.json"):
            if (out / name).is_file():
                run.artifacts[name if name == "spec.yaml" else f"metrics/{name}"] = out / name
        for figure in sorted(out.glob("*.png")):
            run.artifacts[f"figures/{figure.name}"] = figure
        return record(run, self.bundle_dir, self.options.tracking_uri, log=self.options.log)


@contextmanager
def tracked_training(
    spec: Spec, backend: Backend, data: Dataset, out: Path, options: TrackingOptions = TrackingOptions()
) -> Iterator[TrackedRun]:
    """The MLflow run of a training done in the block, which passes the TrackedRun yielded to
    loop.train as its listener; the run's ``outcome`` once the block is left.

    Besides train's files, ``out`` gets environment.json, loss_curves.png and the bundle folder
    mlflow_bundle/, written before the block runs. The block's exceptions (a diverged loss,
    Ctrl-C) are re-raised after the run is recorded as FAILED or KILLED (Ctrl-C as
    TrainingInterrupted). A full disk raises DiskFull after the run is recorded as FAILED (see
    the module docstring). A signal during the finishing raises TrainingInterrupted; the bundle
    holds the run's final status, written first.
    """
    out = Path(out)
    started = now_ms()
    environment = environment_info(backend)
    run = new_train_record(spec, backend, data, environment)
    run.start_time = started
    bundle_dir = out / BUNDLE_DIR
    try:
        bundle_dir.mkdir(parents=True, exist_ok=True)
        reserve_space(bundle_dir)
        (out / "environment.json").write_text(json.dumps(environment, indent=2) + "\n")
        run.artifacts["environment.json"] = out / "environment.json"
        tracked = TrackedRun(spec, out, run, bundle_dir, options)
        try:
            write_bundle(run, bundle_dir)
            yield tracked
        except KeyboardInterrupt as exc:
            epochs, name = tracked.epochs, signal_of(exc)
            tracked.finish("KILLED", f"{STOPPED[name]} after {epochs} epoch(s)")
            raise TrainingInterrupted(out, epochs, tracked.outcome, name) from exc
        except Exception as exc:
            if disk_full_cause(exc) is None:  # a full disk is ended below, writing as little as it can
                tracked.finish("FAILED", failure_text(exc))
            raise
        tracked.finish("FINISHED")
    except Exception as exc:
        cause = disk_full_cause(exc)
        if cause is None:
            raise
        raise DiskFull(_end_on_full_disk(run, bundle_dir, out, cause, options)) from exc
    finally:
        release_space(bundle_dir)


def _end_on_full_disk(run: RunRecord, bundle_dir: Path, out: Path, cause: OSError, options: TrackingOptions) -> str:
    """End the bundle as FAILED after a write failed for want of space, writing nothing but
    run.json (in the space its reserve gives back); log it if MLflow takes it. Returns the
    one line for the user."""
    reason = disk_full_message(cause, out)
    release_space(bundle_dir)
    run.artifacts = copied_artifacts(run, bundle_dir)
    run.tags.update(end_tags("FAILED", reason))
    run.status, run.end_time = "FAILED", now_ms()
    try:
        outcome = record(run, bundle_dir, options.tracking_uri, log=options.log)
    except (DiskFull, OSError):
        if not (bundle_dir / RUN_FILE).is_file():
            return f"{reason}; nothing of the run could be written"
        return (
            f"{reason}; the run's bundle {bundle_dir} could not be ended and stays RUNNING; "
            f"once there is space, 'aebench log {bundle_dir}' logs it as KILLED"
        )
    if outcome.logged:
        return f"{reason}; the run is kept in {bundle_dir} as FAILED and {outcome.message()}"
    return f"{reason}; the run is kept in {bundle_dir} as FAILED; free some space, then: aebench log {bundle_dir}"


def new_train_record(spec: Spec, backend: Backend, data: Dataset, environment: dict) -> RunRecord:
    """The RUNNING record of a train run: params (the flattened resolved spec, backend, mode,
    precision, data sizes) and tags (tracking.run_tags, the data source). The precision is the
    process's as its framework reports it: ``precision.switch.<name>`` holds each switch read
    back, and ``precision`` and ``precision.tf32`` are only written once the read-back is that
    precision (registry.precision_switches: AebenchError otherwise)."""
    switches = precision_switches(backend.name)
    precision = process_precision()
    params = {
        **spec_params(spec),
        "backend": backend.name,
        "mode": TRAIN_MODE,
        "precision": precision.describe(),
        "precision.tf32": str(precision.tf32).lower(),
        **flatten(switches, "precision.switch"),
        "dataset.n_train": str(len(data.x_train)),
        "dataset.n_test": str(len(data.x_test)),
    }
    tags = run_tags(spec, backend.name, framework_of(backend.name), TRAIN_MODE, precision.describe(), environment)
    tags["dataset"] = data.source
    tags[KIND_TAG] = KIND
    tags["mlflow.note.content"] = (
        f"aebench train {spec.name} on {backend.name} ({tags['framework']}), "
        f"{spec.dtype}, {spec.train.epochs} epoch(s). {spec.description}"
    )
    return RunRecord(
        experiment=experiment_name(spec),
        run_name=f"{spec.name}-{backend.name}-{TRAIN_MODE}",
        params=params,
        tags=tags,
        status="RUNNING",
    )


def epoch_metrics(row: dict) -> dict[str, float]:
    """train's metric row as MLflow metrics: train_total -> train/total, seconds -> time/epoch_seconds."""
    metrics = {}
    for column, value in row.items():
        split, _, term = column.partition("_")
        if split in ("train", "test") and term:
            metrics[f"{split}/{term}"] = value
    if row["epoch"] > 0:
        metrics["time/epoch_seconds"] = row["seconds"]
    return metrics


def _stopped_while_finishing(
    exc: KeyboardInterrupt, run: RunRecord, out: Path, epochs: int, tracking_uri: Optional[str]
) -> TrainingInterrupted:
    """What a signal during TrackedRun.finish raises: the bundle holds ``run.status``, written
    first (the write is held against signals; see aebench.stopping)."""
    name = signal_of(exc)
    reason = f"{STOPPED[name]} while the run was being finished"
    kept = LogOutcome(
        "kept", out / BUNDLE_DIR, resolve_tracking_uri(tracking_uri), reason=reason, final_status=run.status
    )
    return TrainingInterrupted(out, epochs, kept, name)


def _end(run: RunRecord, status: str, reason: str, bundle_dir: Path) -> None:
    """Write the run's final ``status`` and why it ended (tracking.end_tags) to its bundle now:
    a quick write (run.json; the artifacts listed so far are copied already) that a signal
    waits for (aebench.stopping.held)."""
    with held():
        run.status, run.end_time = status, now_ms()
        run.tags.update(end_tags(status, reason))
        write_bundle(run, bundle_dir)
