"""A run as a folder of files: what MLflow will receive, written before MLflow is asked.

Layout of a bundle folder::

    run.json      {"format": 1, "bundle_id", "experiment", "run_name", "status", "start_time",
                   "end_time", "params": {key: str}, "tags": {key: str},
                   "metrics": [[key, value, step, timestamp_ms], ...],
                   "artifacts": {artifact_path: sha256}}
    artifacts/    the artifact files, at their artifact paths (e.g. figures/samples.png)
    logged.json   written after a successful log: where it went (tracking URI, run id)

run.json is replaced atomically, so a bundle read at any moment is complete for what it
says. The bundle id (a random UUID) travels to MLflow as the tag ``aebench.bundle_id``,
which is how logging the same bundle twice finds the run it made the first time.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from aebench.errors import AebenchError

FORMAT = 1
RUN_FILE = "run.json"
ARTIFACTS_DIR = "artifacts"
LOGGED_FILE = "logged.json"
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class MetricPoint:
    """One metric value: key, value, step (epoch, or 0 for a single value), time in ms."""

    key: str
    value: float
    step: int = 0
    timestamp: int = field(default_factory=now_ms)


@dataclass
class RunRecord:
    """Everything one MLflow run holds, framework-neutral and JSON-able.

    experiment: MLflow experiment name (created if missing). run_name: shown in the UI.
    params: str -> str (MLflow params; at most 6000 characters a value). tags: str -> str.
    metrics: MetricPoint rows; a series is the rows of one key with increasing steps.
    artifacts: artifact path in the run (e.g. ``figures/samples.png``) -> the file to copy.
    status: RUNNING, FINISHED, FAILED or KILLED. start_time/end_time: ms since the epoch.
    bundle_id: made once per run; keep it when the record is written again (a running
    training rewrites its bundle each epoch).
    """

    experiment: str
    run_name: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: list[MetricPoint] = field(default_factory=list)
    artifacts: dict[str, Path] = field(default_factory=dict)
    status: str = "FINISHED"
    start_time: int = field(default_factory=now_ms)
    end_time: Optional[int] = None
    bundle_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def add_metrics(self, values: dict[str, float], step: int = 0, timestamp: Optional[int] = None) -> None:
        """Append one point per key at ``step`` (non-finite values are kept: MLflow stores NaN)."""
        stamp = now_ms() if timestamp is None else timestamp
        self.metrics.extend(MetricPoint(key, float(value), step, stamp) for key, value in values.items())


@dataclass(frozen=True)
class Bundle:
    """A bundle as read back: its folder, the record (artifacts point into the folder) and
    a digest of its content (run.json plus every artifact's bytes)."""

    path: Path
    record: RunRecord
    digest: str


def write_bundle(record: RunRecord, bundle_dir: Path) -> Path:
    """Write (or rewrite) ``record`` as a bundle in ``bundle_dir``; returns the folder.

    Artifacts are copied under ``artifacts/`` (a file already there with the same bytes is
    not copied again); run.json is written last and atomically.
    """
    if record.status not in STATUSES:
        raise ValueError(f"status {record.status!r} is not one of {STATUSES}")
    bundle_dir = Path(bundle_dir)
    (bundle_dir / ARTIFACTS_DIR).mkdir(parents=True, exist_ok=True)
    hashes = {}
    for artifact_path, source in sorted(record.artifacts.items()):
        target = bundle_dir / ARTIFACTS_DIR / _safe_relative(artifact_path)
        hashes[artifact_path] = _copy_if_changed(Path(source), target)
    payload = {
        "format": FORMAT,
        "bundle_id": record.bundle_id,
        "experiment": record.experiment,
        "run_name": record.run_name,
        "status": record.status,
        "start_time": record.start_time,
        "end_time": record.end_time,
        "params": {k: str(v) for k, v in record.params.items()},
        "tags": {k: str(v) for k, v in record.tags.items()},
        "metrics": [[m.key, _json_number(m.value), m.step, m.timestamp] for m in record.metrics],
        "artifacts": hashes,
    }
    tmp = bundle_dir / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, bundle_dir / RUN_FILE)
    return bundle_dir


def read_bundle(bundle_dir: Path) -> Bundle:
    """The bundle in ``bundle_dir``; AebenchError naming the file and field when it is not one."""
    bundle_dir = Path(bundle_dir)
    run_file = bundle_dir / RUN_FILE
    if not run_file.is_file():
        raise AebenchError(
            f"{bundle_dir}: not a run bundle (no {RUN_FILE}); bundles are the "
            f"mlflow_bundle folders that 'aebench train' writes"
        )
    try:
        text = run_file.read_text()
        data = json.loads(text)
        if data.get("format") != FORMAT:
            raise AebenchError(f"{run_file}: format: {data.get('format')!r}; this aebench reads format {FORMAT}")
        artifacts = {}
        for artifact_path in data["artifacts"]:
            source = bundle_dir / ARTIFACTS_DIR / _safe_relative(artifact_path)
            if not source.is_file():
                raise AebenchError(f"{run_file}: artifacts: {artifact_path} is listed but {source} is missing")
            artifacts[artifact_path] = source
        record = RunRecord(
            experiment=str(data["experiment"]),
            run_name=str(data["run_name"]),
            params=dict(data["params"]),
            tags=dict(data["tags"]),
            artifacts=artifacts,
            status=str(data["status"]),
            start_time=int(data["start_time"]),
            end_time=data["end_time"],
            bundle_id=str(data["bundle_id"]),
            metrics=[MetricPoint(str(k), float(v), int(s), int(t)) for k, v, s, t in data["metrics"]],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise AebenchError(f"{run_file}: not a readable run bundle ({type(exc).__name__}: {exc})") from None
    if record.status not in STATUSES:
        raise AebenchError(f"{run_file}: status: {record.status!r}; allowed: {', '.join(STATUSES)}")
    # run.json lists every artifact's sha256, so its text identifies the whole bundle
    return Bundle(bundle_dir, record, hashlib.sha256(text.encode()).hexdigest())


def find_bundles(path: Path) -> list[Path]:
    """``path`` if it is a bundle, else every bundle below it (a run.json of this format), sorted;
    AebenchError when there is none."""
    path = Path(path)
    if (path / RUN_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise AebenchError(f"{path}: no such bundle folder")
    found = sorted(run.parent for run in path.rglob(RUN_FILE) if _looks_like_bundle(run))
    if not found:
        raise AebenchError(
            f"{path}: holds no run bundle (a folder with {RUN_FILE}); bundles are the "
            "mlflow_bundle folders that 'aebench train' writes"
        )
    return found


def _looks_like_bundle(run_file: Path) -> bool:
    try:
        data = json.loads(run_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == FORMAT and "bundle_id" in data


def note_logged(bundle_dir: Path, destination: dict) -> None:
    """Record in logged.json where the bundle went (one entry per tracking URI)."""
    path = Path(bundle_dir) / LOGGED_FILE
    try:
        entries = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        entries = {}
    entries[destination["tracking_uri"]] = destination
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=1) + "\n")
    os.replace(tmp, path)


def _copy_if_changed(source: Path, target: Path) -> str:
    if not source.is_file():
        raise AebenchError(f"artifact {source}: no such file")
    sha = file_sha256(source)
    if not (target.is_file() and file_sha256(target) == sha):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    return sha


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _safe_relative(artifact_path: str) -> Path:
    """An artifact path as a relative path that stays inside the bundle."""
    relative = Path(artifact_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise AebenchError(f"artifact path {artifact_path!r}: must be relative, without '..'")
    return relative


def _json_number(value: float) -> object:
    """NaN and infinities as strings, so run.json stays standard JSON (float() reads them back)."""
    return value if math.isfinite(value) else str(value)
