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

Deadlines: nothing waits on MLflow without one. A SQLite store that cannot be used (a folder,
a file that is not a database, a folder that takes no new file) is found before MLflow opens
it (store_problem), and the run is kept. A server's /health request has HEALTH_DEADLINE_S in
all, name lookup included, and gets the host name only, never the URI's user or password;
each MLflow call to a server (or database server) has call_deadline_s() in all, retries
included: $MLFLOW_HTTP_REQUEST_TIMEOUT, else 15 s. A server past a deadline is "hung" (the
outcome's ``hung``): a campaign or an ``aebench log`` of many bundles keeps the rest without
trying it again. Messages show URIs through redact and never quote a password.

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
import functools
import logging
import math
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Optional, TypeVar

from aebench.deadline import within
from aebench.environment import spec_sha256
from aebench.errors import AebenchError
from aebench.spec.types import Spec
from aebench.track.bundle import (
    STALE_AFTER_S,
    Bundle,
    RunRecord,
    note_logged,
    now_ms,
    read_bundle,
    release_space,
    staged_artifacts,
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
HEALTH_DEADLINE_S = 5.0
"""Seconds for the whole /health request, name lookup included. A server answers it in
milliseconds; 5 s leaves room for a slow lookup and connect, and is all a server that is down
or hung costs a run."""
REQUEST_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
# MLflow's REST client retries 7 times with exponential backoff (minutes) before giving up;
# a server that is down should cost seconds. Used only where the user has not set them.
# REQUEST_TIMEOUT_ENV also bounds each MLflow call to a server as a whole (call_deadline_s).
# MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: MLflow prints each ended run's address, the tracking
# URI's password included; aebench prints its own line (redact, runs_table_url).
HTTP_LIMITS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    REQUEST_TIMEOUT_ENV: "15",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
MAX_TAG_CHARS = 5000  # MLflow's limit on a tag value (older servers); a reason is cut to it
_T = TypeVar("_T")
MAX_PARAMS, MAX_TAGS, MAX_METRICS = 100, 100, 1000  # per log_batch call (MLflow's limits)


@dataclass(frozen=True)
class LogOutcome:
    """What became of one bundle.

    status: ``logged`` (a new MLflow run), ``completed`` (an earlier, cut-off run of this
    bundle brought up to date), ``skipped`` (already logged with this exact content),
    ``kept`` (not logged: ``reason`` says why; the bundle holds the whole run) or ``running``
    (not logged: the process writing the bundle still runs; ``reason`` names it).
    ``final_status``: the MLflow status the run was given (KILLED for a RUNNING bundle whose
    process is gone), or for a kept bundle the status it holds. ``hung``: the tracking server
    passed a deadline (ServerHung); whoever logs more runs in the same campaign or command
    keeps them without trying it again (``not_tried`` of record and log_bundle).
    """

    status: str
    bundle_dir: Path
    tracking_uri: str
    run_id: Optional[str] = None
    experiment_id: Optional[str] = None
    reason: str = ""
    final_status: str = ""
    hung: bool = False

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


class ServerHung(AebenchError):
    """A tracking server took longer than its deadline to answer (it may be trickling bytes or
    hung). Exit code 1: nothing is wrong with the user's input."""

    exit_code = 1


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


def record(
    run: RunRecord, bundle_dir: Path, tracking_uri: Optional[str] = None, log: bool = True, not_tried: str = ""
) -> LogOutcome:
    """Write ``run`` as a bundle in ``bundle_dir``, then log it to MLflow.

    The bundle is written whatever happens next (bundle.write_bundle), so no result depends
    on MLflow. Then, with ``log`` true, it is logged to ``resolve_tracking_uri(tracking_uri)``
    (log_bundle: idempotent, never raises for an MLflow that is missing, unreachable or
    failing: the outcome is ``kept`` with the reason; ``not_tried``: see log_bundle). Call it
    again with the same record (same bundle_id) after adding metrics or artifacts, and the same
    MLflow run is completed. Raises AebenchError only for a record that cannot be written (a
    missing artifact file).

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
        uri = resolve_tracking_uri(tracking_uri)
        return LogOutcome("kept", Path(bundle_dir), uri, reason="MLflow logging switched off", final_status=run.status)
    return log_bundle(bundle_dir, tracking_uri, not_tried)


def log_bundle(bundle_dir: Path, tracking_uri: Optional[str] = None, not_tried: str = "") -> LogOutcome:
    """Log the bundle in ``bundle_dir`` to MLflow; safe to repeat (see the module docstring).

    Raises AebenchError for a folder that is not a readable bundle; every MLflow problem
    becomes a ``kept`` outcome with the reason. A RUNNING bundle whose process still runs is
    left alone (a ``running`` outcome); one whose process is gone (bundle.writer_gone: killed,
    or out of space) becomes a KILLED MLflow run with everything measured until then.

    Nothing waits without a deadline: an unusable SQLite store is found before MLflow opens it
    (store_problem), a server's /health request has HEALTH_DEADLINE_S in all and each MLflow
    call to a server call_deadline_s(); a server past a deadline gives a kept outcome with
    ``hung`` set. ``not_tried`` (not_tried_again of such an outcome): MLflow is not contacted,
    the bundle is kept with that reason.
    """
    uri = resolve_tracking_uri(tracking_uri)
    bundle = read_bundle(Path(bundle_dir))
    if bundle.record.status == "RUNNING":
        if not writer_gone(bundle):
            return LogOutcome("running", bundle.path, uri, reason=_still_written(bundle))
        bundle = _as_killed(bundle)
    if not_tried:
        return _kept(bundle, uri, not_tried)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return _kept(bundle, uri, "MLflow is not installed; pip install 'aebench[tracking]'")
    problem = store_problem(uri)
    if problem:
        return _kept(bundle, uri, problem)
    silent, hung = server_health(uri)
    if silent:
        return _kept(bundle, uri, silent, hung)
    with _bounded_http_retries():
        try:
            outcome = _log(bundle, uri)
        except ServerHung as exc:
            return _kept(bundle, uri, str(exc), hung=True)
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


def not_tried_again(hung: LogOutcome) -> str:
    """The reason a later bundle is kept without trying the server that ``hung`` found hung
    (one line naming it), for ``not_tried`` of record and log_bundle."""
    return f"not tried again: {hung.reason}, for an earlier run"


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
            **end_tags("KILLED", f"the run stopped while RUNNING: {writer} was gone when the bundle was logged"),
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
        lock = open(_lock_path(path), "a")
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


def _lock_path(database: Path) -> Path:
    return database.with_name(database.name + ".lock")


def store_problem(uri: str, writing: bool = True) -> str:
    """Why the SQLite store of a ``sqlite:///PATH`` URI cannot be used, in one line ("" where it
    can, and for any other URI): PATH is a folder, not a regular file, unreadable or not an
    SQLite database, or (``writing``) its folder cannot be made or takes no new file (SQLite
    writes its journal beside the database; the file tried is store_lock's lock). MLflow retries
    a store it cannot open for about two minutes, with a warning each time; this answers at once."""
    path = sqlite_path(uri)
    if path is None:
        return ""
    problem = _not_a_database(path) if path.exists() or path.is_symlink() else ""
    if not problem and writing:
        problem = _unwritable(path)
    return f"the MLflow store {os.path.abspath(path)} {problem}" if problem else ""


def _not_a_database(path: Path) -> str:
    if path.is_dir():
        return "is a folder, not a database file"
    if not path.is_file():
        return "is not a regular file"
    try:
        with open(path, "rb") as f:
            head = f.read(len(SQLITE_HEADER))
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    return "is not an SQLite database" if head and head != SQLITE_HEADER else ""


def _unwritable(path: Path) -> str:
    folder = Path(os.path.abspath(path.parent))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot be made: its folder {folder} cannot be made ({exc.strerror})"
    try:
        open(_lock_path(path), "a").close()
    except OSError as exc:
        return f"cannot be written: no file can be made in its folder {folder} ({exc.strerror})"
    if path.is_file() and not os.access(path, os.R_OK | os.W_OK):
        return "cannot be written: the file is read-only"
    return ""


def open_client(uri: str) -> Any:
    """An MlflowClient whose store is open. A SQLite store is checked first (store_problem, read
    only: AebenchError), then created and migrated under store_lock (MLflow opens a store at its
    first call, racing any other process that opens the same new SQLite file). For a store
    reached over a network (an http(s) server, a database server) each call of the client, its
    making included, ends within call_deadline_s(), else raises ServerHung."""
    from mlflow import MlflowClient

    problem = store_problem(uri, writing=False) or scheme_problem(uri)
    if problem:
        raise AebenchError(problem)
    quiet_mlflow_store_logs()
    if not _over_network(uri):
        with store_lock(uri):
            client = MlflowClient(tracking_uri=uri)
            client.search_experiments(max_results=1)
        return client
    seconds = call_deadline_s()
    late = f"MLflow at {redact(uri)} did not answer within {seconds:g} s (${REQUEST_TIMEOUT_ENV} sets how long)"
    bounded = _DeadlineClient(call_within(seconds, lambda: MlflowClient(tracking_uri=uri), late), seconds, late)
    bounded.search_experiments(max_results=1)
    return bounded


TRACKING_SCHEMES = ("", "file", "sqlite", "http", "https", "postgresql", "mysql", "mssql", "databricks")


def scheme_problem(uri: str) -> str:
    """One line when ``uri`` has a scheme MLflow cannot track to ("" when it can)."""
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    if scheme in TRACKING_SCHEMES or len(scheme) == 1:  # one letter: a Windows drive
        return ""
    return f"{redact(uri)}: not a tracking URI; allowed schemes: {', '.join(s for s in TRACKING_SCHEMES if s)}"


def _over_network(uri: str) -> bool:
    return urllib.parse.urlsplit(uri).scheme not in ("", "file", "sqlite")


def call_deadline_s() -> float:
    """Seconds one MLflow call to a server may take in all, retries and uploads included:
    $MLFLOW_HTTP_REQUEST_TIMEOUT (MLflow's own setting, which bounds each socket read) where it
    is a positive number, else HTTP_LIMITS' value."""
    try:
        seconds = float(os.environ.get(REQUEST_TIMEOUT_ENV, ""))
    except ValueError:
        seconds = 0.0
    return seconds if 0 < seconds < math.inf else float(HTTP_LIMITS[REQUEST_TIMEOUT_ENV])


def call_within(seconds: float, call: Callable[[], _T], late: str) -> _T:
    """``call()``, waited for ``seconds`` at most (aebench.deadline): its result, or its exception
    raised again; ServerHung(``late``) once the deadline passes. A call past the deadline is left
    to end in its thread, so a server found hung is not to be tried again."""
    return within(seconds, call, lambda: ServerHung(late), name="aebench-tracking-call")


class _DeadlineClient:
    """An MlflowClient each of whose method calls ends within ``seconds`` (call_within, ServerHung
    with ``late``); its other attributes pass through."""

    def __init__(self, client: Any, seconds: float, late: str):
        self._client, self._seconds, self._late = client, seconds, late

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        return functools.partial(self._call, attr) if callable(attr) else attr

    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return call_within(self._seconds, functools.partial(method, *args, **kwargs), self._late)


def server_silence(uri: str) -> str:
    """Why an http(s) tracking server does not answer its /health endpoint ("" if it answers
    or the URI is not a server); see server_health."""
    return server_health(uri)[0]


def server_health(uri: str) -> tuple[str, bool]:
    """(why an http(s) tracking server does not answer /health, whether it was found hung: the
    request, name lookup included, took over HEALTH_DEADLINE_S); ("", False) where it answers,
    even with an HTTP error (MLflow will say what is wrong), or the URI is not a server. The
    request carries no user or password, and name lookup gets the host name alone (health_url)."""
    try:
        url = health_url(uri)
    except ValueError as exc:
        return f"the tracking URI {redact(uri)} is not a server address ({exc})", False
    if not url:
        return "", False
    late = f"the MLflow server at {redact(uri)} did not answer /health within {HEALTH_DEADLINE_S:g} s"
    try:
        call_within(HEALTH_DEADLINE_S, functools.partial(_get, url), late)
    except ServerHung as exc:
        return str(exc), True
    except urllib.error.HTTPError:
        return "", False
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = hide_password(str(getattr(exc, "reason", exc)), uri)
        return f"the MLflow server at {redact(uri)} does not answer ({reason})", False
    return "", False


def health_url(uri: str) -> str:
    """The /health address of an http(s) tracking URI, with no user or password: scheme, host
    name, port and path only ("" for any other URI). ValueError for one without a host or with a
    port that is not a number."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return ""
    if not parts.hostname:
        raise ValueError("no host name")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health", "", ""))


def _get(url: str) -> None:
    with urllib.request.urlopen(url, timeout=HEALTH_DEADLINE_S):  # noqa: S310 - http(s) only (health_url)
        pass


def redact(uri: str) -> str:
    """The URI with its password (or a user name alone, which may be a token) shown as ***, for
    messages and logged.json."""
    parts = urllib.parse.urlsplit(uri)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return uri
    user, colon, _ = userinfo.partition(":")
    shown = f"{user}:***" if colon else "***"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def hide_password(text: str, uri: str) -> str:
    """``text`` (a message that may quote ``uri``, as MLflow's errors do) with the URI's user
    information, as written and percent-decoded, shown as redact shows it."""
    parts = urllib.parse.urlsplit(uri)
    userinfo = parts.netloc.rpartition("@")[0]
    if not userinfo:
        return text
    shown = redact(uri).partition("//")[2].rpartition("@")[0]
    for secret in sorted({userinfo, urllib.parse.unquote(userinfo)}, key=len, reverse=True):
        text = text.replace(secret + "@", shown + "@")
    password = parts.password and urllib.parse.unquote(parts.password)
    return text.replace(password, "***") if password and len(password) >= 4 else text


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


def end_tags(status: str, reason: str) -> dict[str, str]:
    """The tag saying why a run ended as ``status``: END_REASON_TAG = ``reason`` (cut to
    MAX_TAG_CHARS) for a FAILED or KILLED run with a reason, none otherwise. Train runs and
    bench cells alike carry it, so one filter finds every failure's reason."""
    if status not in ("FAILED", "KILLED") or not reason:
        return {}
    return {END_REASON_TAG: reason[:MAX_TAG_CHARS]}


def failure_text(exc: BaseException) -> str:
    """One line on why a run failed: an AebenchError's own message, else the exception's type
    and message."""
    if isinstance(exc, AebenchError):
        return " ".join(str(exc).split())[:MAX_TAG_CHARS]
    return _one_line(exc)


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
    with staged_artifacts(bundle) as staged:  # private copies, each checked against run.json's sha256
        for artifact_path, source in sorted(staged.items()):
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


def _kept(bundle: Bundle, uri: str, reason: str, hung: bool = False) -> LogOutcome:
    """A ``kept`` outcome; ``reason`` is shown without the URI's password (hide_password)."""
    return LogOutcome(
        "kept", bundle.path, uri, reason=hide_password(reason, uri), final_status=bundle.record.status, hung=hung
    )


@contextlib.contextmanager
def _bounded_http_retries() -> Iterator[None]:
    """HTTP_LIMITS in os.environ while the block runs, each where the user has not set it."""
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
