"""MLflow tracking, bundle first: every run is written as files, then logged if MLflow answers.

The one entry point for any run (a ``train`` run, a benchmark cell) is ``record``. A run is
always written as a bundle folder first (bundle.py), then logged with MlflowClient if mlflow
imports and the tracking URI answers; otherwise the bundle is kept and ``aebench log BUNDLE``
logs it later. Logging is idempotent: the bundle id is the run tag ``aebench.bundle_id``
and the bundle's content digest the tag ``aebench.bundle_digest`` (set last), so logging a
bundle again skips a run that is complete, completes one that was cut off (missing params,
metric points, artifacts, final status) and never makes a second run.

A RUNNING bundle (a training still running, or one that was killed) is logged only once its
writing process is gone, then as a KILLED run ending when the bundle was last written; while
that process runs, it is left for later (status ``running``). A new SQLite store is created
and migrated under an inter-process lock (``<db>.lock`` beside the database), so processes
that log to one new store at once do not race through MLflow's schema migrations.

Grouping: one experiment per spec for train runs (``aebench/<spec>``) and one per campaign for
bench cells (``aebench-bench/<campaign>``), and the tags ``spec``, ``backend``, ``framework``,
``mode``, ``dtype``, ``precision`` on every run, which the MLflow UI filters and groups by.

Kinds: every run carries the tag ``aebench.kind``, ``train`` (a training) or ``bench`` (a
benchmark cell), which ``aebench compare`` never puts side by side; a bundle written before the
tag (or a record without it) gets it from its experiment's name prefix when it is logged
(``run_kind``). Every experiment aebench creates or logs into carries ``mlflow.experimentKind``
= ``custom_model_development`` (MLflow's "Machine learning" kind: runs, not GenAI traces) unless
it has a kind already. MLflow 3.17's UI opens an experiment in the view of its sidebar switch
(GenAI in a new browser), whatever the tag; ``runs_table_url`` is the address that opens the
runs table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional

from aebench.environment import spec_sha256
from aebench.spec.types import Spec
from aebench.track.bundle import (
    STALE_AFTER_S,
    Bundle,
    RunRecord,
    note_logged,
    now_ms,
    read_bundle,
    release_space,
    write_bundle,
    writer_gone,
)

try:
    import fcntl
except ImportError:  # not on Windows: there the store is opened without the lock
    fcntl = None  # type: ignore[assignment]

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
BUNDLE_ID_TAG = "aebench.bundle_id"
BUNDLE_DIGEST_TAG = "aebench.bundle_digest"
END_REASON_TAG = "aebench.end_reason"  # why a run ended FAILED or KILLED, where aebench knows it
KIND_TAG = "aebench.kind"
EXPERIMENT_PREFIXES = {"train": "aebench/", "bench": "aebench-bench/"}  # kind -> its experiments' name prefix
KINDS = tuple(EXPERIMENT_PREFIXES)
# MLflow 3's experiment type ("Machine learning" in the UI, as opposed to genai_development);
# values: mlflow/server/js, enum of experiment kinds (custom_model_development, genai_development, ...)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
HEALTH_TIMEOUT_S = 3.0
# MLflow's REST client retries 7 times with exponential backoff (minutes) before giving up;
# a server that is down should cost seconds. Used only where the user has not set them.
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}
MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000  # per log_batch call (MLflow's limits)


@dataclass(frozen=True)
class LogOutcome:
    """What became of one bundle.

    status: ``logged`` (a new MLflow run), ``completed`` (an earlier, cut-off run of this
    bundle brought up to date), ``skipped`` (already logged with this exact content),
    ``kept`` (not logged: ``reason`` says why; the bundle holds the whole run) or ``running``
    (not logged: the process writing the bundle still runs; ``reason`` names it).
    ``final_status``: the MLflow status the run was given (KILLED for a RUNNING bundle whose
    process is gone).
    """

    status: str
    bundle_dir: Path
    tracking_uri: str
    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    reason: str = ""
    final_status: str = ""

    @property
    def logged(self) -> bool:
        return self.status not in ("kept", "running")

    def message(self) -> str:
        """One line for the user."""
        if self.status == "running":
            return f"left for later: {self.reason}; log it once it has ended: aebench log {self.bundle_dir}"
        if self.status == "kept":
            return (
                f"MLflow logging skipped ({self.reason}); the run is kept in {self.bundle_dir}; "
                f"log it later with: aebench log {self.bundle_dir}"
            )
        verb = {
            "logged": "logged",
            "completed": "completed the earlier, partly logged",
            "skipped": "already logged as",
        }[self.status]
        ended = f" as {self.final_status}" if self.final_status in ("FAILED", "KILLED") else ""
        where = f"(experiment {self.experiment_id}) at {redact(self.tracking_uri)}"
        page = runs_table_url(self.tracking_uri, self.experiment_id or "")
        return f"{verb} MLflow run {self.run_id}{ended} {where}" + (f"; runs table: {page}" if page else "")


def resolve_tracking_uri(explicit: Optional[str] = None) -> str:
    """``explicit`` (--tracking-uri), else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db."""
    return explicit or os.environ.get(TRACKING_URI_ENV) or DEFAULT_TRACKING_URI


def run_kind(experiment: str, tags: dict[str, str]) -> str:
    """What a run is: its ``aebench.kind`` tag where that is one of KINDS, else the kind whose
    experiment prefix its experiment's name starts with (runs logged before the tag), else ""."""
    kind = tags.get(KIND_TAG, "")
    if kind in KINDS:
        return kind
    return next((k for k, prefix in EXPERIMENT_PREFIXES.items() if experiment.startswith(prefix)), "")


def runs_table_url(server: str, experiment_id: str) -> str:
    """The address of an experiment's runs table on an MLflow server (``server``: an http(s)
    tracking URI; "" for any other URI). ``workflowType=machine_learning`` makes MLflow 3.17's
    UI open the runs table even where its sidebar switch is on GenAI."""
    if urllib.parse.urlparse(server).scheme not in ("http", "https") or not experiment_id:
        return ""
    return f"{redact(server).rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def record(run: RunRecord, bundle_dir: Path, tracking_uri: Optional[str] = None, log: bool = True) -> LogOutcome:
    """Write ``run`` as a bundle in ``bundle_dir``, then log it to MLflow.

    The bundle is written whatever happens next (bundle.write_bundle), so no result depends
    on MLflow. Then, with ``log`` true, it is logged to ``resolve_tracking_uri(tracking_uri)``
    (log_bundle: idempotent, never raises for an MLflow that is missing, unreachable or
    failing: the outcome is ``kept`` with the reason). Call it again with the same record
    (same bundle_id) after adding metrics or artifacts, and the same MLflow run is completed.
    Raises AebenchError only for a record that cannot be written (a missing artifact file).

    A benchmark cell, for example::

        env = environment_info(backend)
        run = RunRecord(experiment=f"aebench-bench/{campaign}", run_name=f"{spec.name}-{backend.name}-{mode}",
                        params={**spec_params(spec), "backend": backend.name, "mode": mode,
                                "precision": precision.describe(), "batch_size": str(batch)},
                        tags=run_tags(spec, backend.name, framework, mode, precision.describe(), env),
                        artifacts={"cell.json": cell_dir / "cell.json"})
        run.add_metrics({"time/step_median_s": median, "time/samples_per_second": rate})
        outcome = record(run, cell_dir / "mlflow_bundle", tracking_uri)
        if not outcome.logged:
            print(outcome.message())
    """
    write_bundle(run, bundle_dir)
    if not log:
        return LogOutcome(
            "kept", Path(bundle_dir), resolve_tracking_uri(tracking_uri), reason="MLflow logging switched off"
        )
    return log_bundle(bundle_dir, tracking_uri)


def log_bundle(bundle_dir: Path, tracking_uri: Optional[str] = None) -> LogOutcome:
    """Log the bundle in ``bundle_dir`` to MLflow; safe to repeat (see the module docstring).

    Raises AebenchError for a folder that is not a readable bundle; every MLflow problem
    becomes a ``kept`` outcome with the reason. A RUNNING bundle whose process still runs is
    left alone (a ``running`` outcome); one whose process is gone (bundle.writer_gone: killed,
    or out of space) becomes a KILLED MLflow run with everything measured until then.
    """
    uri = resolve_tracking_uri(tracking_uri)
    bundle = read_bundle(Path(bundle_dir))
    if bundle.record.status == "RUNNING":
        if not writer_gone(bundle):
            return LogOutcome("running", bundle.path, uri, reason=_still_written(bundle))
        bundle = _as_killed(bundle)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return _kept(bundle, uri, "MLflow is not installed; pip install 'aebench[tracking]'")
    silent = server_silence(uri)
    if silent:
        return _kept(bundle, uri, silent)
    with _bounded_http_retries():
        try:
            outcome = _log(bundle, uri)
        except Exception as exc:  # noqa: BLE001 - any MLflow failure keeps the bundle for later
            return _kept(bundle, uri, f"MLflow at {redact(uri)} failed: {_one_line(exc)}")
    note_logged(
        bundle.path,
        {
            "tracking_uri": redact(uri),
            "run_id": outcome.run_id,
            "experiment_id": outcome.experiment_id,
            "digest": bundle.digest,
            "time": now_ms(),
        },
    )
    return outcome


def _still_written(bundle: Bundle) -> str:
    age_s = max(0, now_ms() - bundle.updated_ms) // 1000
    writer = bundle.writer.describe() if bundle.writer else "a process aebench did not record"
    text = f"the run is still being written by {writer} (last written {age_s} s ago)"
    if bundle.writer is None or not bundle.writer.on_this_host():
        text += f"; from another host it counts as killed after {STALE_AFTER_S // 3600} h without a change"
    return text


def _as_killed(bundle: Bundle) -> Bundle:
    """``bundle`` as a KILLED run that ended when run.json was last written (the bundle is not rewritten)."""
    writer = bundle.writer.describe() if bundle.writer else "its writing process"
    record = dataclasses.replace(
        bundle.record,
        status="KILLED",
        end_time=bundle.updated_ms,
        tags={
            **bundle.record.tags,
            END_REASON_TAG: f"the run stopped while RUNNING: {writer} was gone when the bundle was logged",
        },
    )
    with contextlib.suppress(OSError):  # a bundle in a read-only folder keeps it
        release_space(bundle.path)  # the reserve a killed training could not give back
    return dataclasses.replace(bundle, record=record)


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a ``sqlite:///PATH`` URI, hold an exclusive flock on PATH.lock (beside the database)
    so one process at a time creates or migrates the store; other URIs: no lock. The database's
    folder is made first, as MLflow would make it. Where the lock file cannot be made (a
    read-only folder, a file in the path: no store can be created there either), no lock."""
    path = sqlite_path(uri)
    if path is None or fcntl is None:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_name(path.name + ".lock"), "a")
    except OSError:
        yield
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///PATH`` tracking URI (query left out), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def open_client(uri: str) -> Any:
    """An MlflowClient whose store is open: created and migrated under store_lock (MLflow opens
    a store at its first call, racing any other process that opens the same new SQLite file)."""
    from mlflow import MlflowClient

    quiet_mlflow_store_logs()
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    return client


def server_silence(uri: str) -> str:
    """Why an http(s) tracking server does not answer its /health endpoint ("" if it answers
    or the URI is not a server)."""
    if urllib.parse.urlparse(uri).scheme not in ("http", "https"):
        return ""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=HEALTH_TIMEOUT_S):  # noqa: S310
            return ""
    except urllib.error.HTTPError:
        return ""  # it answered; MLflow itself will say what is wrong
    except (urllib.error.URLError, OSError) as exc:
        return f"the MLflow server at {redact(uri)} does not answer ({getattr(exc, 'reason', exc)})"


def redact(uri: str) -> str:
    """The URI without a password, for messages and logged.json."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


# ---------------------------------------------------------------- params and tags


def flatten(value: object, prefix: str = "") -> dict[str, str]:
    """Nested mappings and lists as dotted keys: {'model': {'encoder': [{'units': 3}]}} ->
    {'model.encoder.0.units': '3'}; a list of plain values stays one value ('[7, 7, 64]');
    None values are left out."""
    items: Iterable[tuple[object, object]]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)) and any(isinstance(v, (dict, list, tuple)) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    elif isinstance(value, (list, tuple)):
        return {prefix: "[" + ", ".join(map(str, value)) + "]"}
    else:
        return {} if value is None else {prefix: str(value)}
    flat: dict[str, str] = {}
    for key, item in items:
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def spec_params(spec: Spec) -> dict[str, str]:
    """The resolved spec flattened to MLflow params (model.latent.size, loss.kl.beta, ...)."""
    return flatten(spec.to_dict())


def run_tags(spec: Spec, backend: str, framework: str, mode: str, precision: str, environment: dict) -> dict[str, str]:
    """The tags every aebench run carries: what to filter and group by in the UI (spec,
    backend, framework, mode, dtype, precision) and where it ran (environment_info)."""
    tags = {
        "spec": spec.name,
        "backend": backend,
        "framework": framework,
        "mode": mode,
        "dtype": spec.dtype,
        "precision": precision,
        "spec_sha256": spec_sha256(spec),
        "device": str(environment.get("device", "unknown")),
        "gpu": str(environment.get("gpu", "none")),
        "driver": str(environment.get("driver", "none")),
        "cpu": str(environment.get("cpu", "")),
        "hostname": str(environment.get("hostname", "")),
        "python": str(environment.get("python", "")),
        "aebench_version": str(environment.get("aebench", "")),
        "git_commit": str(environment.get("git_commit", "unknown")),
    }
    tags.update({f"version.{name}": str(v) for name, v in environment.get("versions", {}).items()})
    commit = tags["git_commit"].split("+")[0]
    if commit != "unknown":
        tags["mlflow.source.git.commit"] = commit  # shown as "Git commit" in the UI
    return tags


# ---------------------------------------------------------------- logging


def _log(bundle: Bundle, uri: str) -> LogOutcome:
    from mlflow.entities import Metric, Param, RunTag

    rec = bundle.record
    client = open_client(uri)
    experiment_id = _experiment_id(client, rec.experiment)
    run = _find_run(client, experiment_id, rec.bundle_id)
    if run is not None and run.data.tags.get(BUNDLE_DIGEST_TAG) == bundle.digest and run.info.status == rec.status:
        return LogOutcome("skipped", bundle.path, uri, run.info.run_id, experiment_id, final_status=rec.status)
    if run is None:
        run = client.create_run(
            experiment_id, start_time=rec.start_time, run_name=rec.run_name, tags={BUNDLE_ID_TAG: rec.bundle_id}
        )
        status = "logged"
    else:
        status = "completed"
    run_id = run.info.run_id
    known_params = run.data.params
    params = [Param(k, v) for k, v in rec.params.items() if known_params.get(k) != v]
    kind = run_kind(rec.experiment, rec.tags)  # a bundle written before the kind tag gets it here
    tags = [RunTag(k, v) for k, v in ({KIND_TAG: kind, **rec.tags} if kind else rec.tags).items()]
    logged_points = _logged_points(client, run_id, {m.key for m in rec.metrics} & set(run.data.metrics))
    metrics = [
        Metric(m.key, m.value, m.timestamp, m.step)
        for m in rec.metrics
        if (m.key, m.step, m.timestamp) not in logged_points
    ]
    for start in range(0, len(params), MAX_PARAMS):
        client.log_batch(run_id, params=params[start : start + MAX_PARAMS])
    for start in range(0, len(tags), MAX_TAGS):
        client.log_batch(run_id, tags=tags[start : start + MAX_TAGS])
    for start in range(0, len(metrics), MAX_METRICS):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS])
    for artifact_path, source in sorted(rec.artifacts.items()):
        folder = str(PurePosixPath(artifact_path).parent)
        client.log_artifact(run_id, str(source), artifact_path=None if folder == "." else folder)
    if rec.status != "RUNNING":
        client.set_terminated(run_id, rec.status, end_time=rec.end_time)
    client.set_tag(run_id, BUNDLE_DIGEST_TAG, bundle.digest)
    return LogOutcome(status, bundle.path, uri, run_id, experiment_id, final_status=rec.status)


def quiet_mlflow_store_logs() -> None:
    """MLflow announces at INFO level each time it creates or migrates a SQLite store's tables."""
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _experiment_id(client: Any, name: str) -> str:
    """The id of experiment ``name``, created if missing; either way it has EXPERIMENT_KIND_TAG."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"experiment '{name}' is deleted in MLflow; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) "
            "or remove it for good (mlflow gc)"
        )
    if not experiment.tags.get(EXPERIMENT_KIND_TAG):
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def _find_run(client: Any, experiment_id: str, bundle_id: str) -> Optional[Any]:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{BUNDLE_ID_TAG}` = '{bundle_id}'", max_results=1)
    return runs[0] if runs else None


def _logged_points(client: Any, run_id: str, keys: set[str]) -> set[tuple[str, int, int]]:
    """(key, step, timestamp) of every point already logged for ``keys``."""
    return {(key, m.step, m.timestamp) for key in keys for m in client.get_metric_history(run_id, key)}


def _kept(bundle: Bundle, uri: str, reason: str) -> LogOutcome:
    return LogOutcome("kept", bundle.path, uri, reason=reason)


@contextlib.contextmanager
def _bounded_http_retries() -> Iterator[None]:
    added = {k: v for k, v in HTTP_LIMITS.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"
