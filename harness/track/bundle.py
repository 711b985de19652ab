"""A run as a folder of files: what MLflow will receive, written before MLflow is asked.

Layout of a bundle folder::

    run.json      {"format": 1, "bundle_id", "experiment", "run_name", "status", "start_time",
                   "end_time", "params": {key: str}, "tags": {key: str},
                   "metrics": [[key, value, step, timestamp_ms], ...],
                   "artifacts": {artifact_path: sha256},
                   "writer": {"pid", "host", "started"}}
    artifacts/    the artifact files, at their artifact paths (e.g. figures/samples.png)
    logged.json   written after a successful log: where it went (tracking URI, run id)
    .space_reserve  held by a running training (reserve_space), given up to end the bundle on a full disk

run.json is replaced atomically, so a bundle read at any moment is complete for what it
says. The bundle id (a random UUID) travels to MLflow as the tag ``aebench.bundle_id``,
which is how logging the same bundle twice finds the run it made the first time.

``writer`` names the process that last wrote run.json (its pid, host name and, where /proc
tells it, the boot and start time that tell a reused pid apart), so a RUNNING bundle whose
process is gone is known as killed (writer_gone). Older bundles without it are judged by
the age of run.json alone.

A bundle may come from anyone, so nothing here follows a link (aebench.safe_files): files are
written to exclusively made temporary files and renamed into place, and a link where the
bundle keeps its own file or folder is one error line naming it. Only the bundle's own regular
files are sent: ``read_bundle`` refuses an artifact that is a link (or lies below one), that
resolves outside the bundle or, once no process writes the bundle any more, whose bytes do not
match the sha256 run.json lists for it; the whole run is then left unlogged and kept as it is.
``staged_artifacts`` copies the artifacts to a private folder, checking each copy's sha256
again, and MLflow is given those copies.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Optional

from aebench.errors import DISK_FULL_ERRNOS, AebenchError, DiskFull
from aebench.safe_files import (
    copy_file,
    fresh_file,
    own_folder,
    own_folders,
    parse_json,
    read_json,
    read_text,
    refuse_link,
    regular_sha256,
    write_text,
)

FORMAT = 1
RUN_FILE = "run.json"
ARTIFACTS_DIR = "artifacts"
LOGGED_FILE = "logged.json"
RESERVE_FILE = ".space_reserve"
RESERVE_BYTES = 256 * 1024  # room to end a bundle (run.json is ~5 KB plus ~0.5 KB an epoch) on a full disk
STATUSES = ("RUNNING", "FINISHED", "FAILED", "KILLED")
# a RUNNING bundle written on another host counts as killed once run.json is this old
STALE_AFTER_S = 24 * 3600


def now_ms() -> int:
    return int(time.time() * 1000)


def disk_full_cause(exc: BaseException) -> Optional[OSError]:
    """The OSError with a disk-full errno that ``exc`` is or was raised from (its __cause__ or
    __context__ chain), or None."""
    seen: set[int] = set()
    current: Optional[BaseException] = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in DISK_FULL_ERRNOS:
            return current
        current = current.__cause__ or current.__context__
    return None


def disk_full_message(cause: OSError, where: Path) -> str:
    """'no space left on device writing PATH (ENOSPC: No space left on device)': the file the
    OSError names, else 'writing into FOLDER' (``where``: a write to an open file names none)."""
    path = f"{_shorten(str(cause.filename))}" if cause.filename else f"into {_shorten(str(where))}"
    name = errno.errorcode.get(cause.errno or 0, str(cause.errno))
    return f"no space left on device writing {path} ({name}: {cause.strerror})"


def _shorten(path: str, limit: int = 200) -> str:
    return path if len(path) <= limit else "..." + path[-(limit - 3) :]


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
class Writer:
    """The process that wrote a bundle: pid, host name, and ``started`` (boot id and start
    time of the process, from /proc; "" where there is no /proc), which tells a reused pid apart."""

    pid: int
    host: str
    started: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host[:100]}"

    def on_this_host(self) -> bool:
        return self.host == socket.gethostname()


@dataclass(frozen=True)
class Bundle:
    """A bundle as read back: its folder, the record (artifacts point into the folder), a
    digest of its content (run.json plus every artifact's bytes), the process that wrote it
    (None for bundles from before writers were recorded), when run.json was last written, and
    the sha256 run.json lists for each artifact."""

    path: Path
    record: RunRecord
    digest: str
    writer: Optional[Writer] = None
    updated_ms: int = 0
    artifact_sha256: dict[str, str] = field(default_factory=dict)


def this_writer() -> Writer:
    """The current process as a Writer."""
    return Writer(os.getpid(), socket.gethostname(), _process_started(os.getpid()))


def writer_gone(bundle: Bundle, now: Optional[int] = None) -> bool:
    """Whether the process that wrote ``bundle`` can no longer be writing it: on this host, its
    pid no longer exists (or now belongs to a process started later); from another host, or
    from an unknown writer, run.json has not changed for STALE_AFTER_S."""
    writer = bundle.writer
    if writer is None or not writer.on_this_host():
        return (now_ms() if now is None else now) - bundle.updated_ms > STALE_AFTER_S * 1000
    return not _process_alive(writer)


def _process_alive(writer: Writer) -> bool:
    try:
        os.kill(writer.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    started = _process_started(writer.pid)
    return not (writer.started and started and started != writer.started)


def _process_started(pid: int) -> str:
    """'<boot id>:<start time in clock ticks>' of ``pid`` from /proc, or "" where /proc cannot tell."""
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat[stat.rfind(")") + 2 :].split()  # after the command name, which may hold spaces
    return f"{boot_id}:{fields[19]}" if len(fields) > 19 else ""


def write_bundle(record: RunRecord, bundle_dir: Path) -> Path:
    """Write (or rewrite) ``record`` as a bundle in ``bundle_dir``; returns the folder.

    Artifacts are copied under ``artifacts/`` (a file already there with the same bytes is
    not copied again); run.json is written last and atomically, naming this process as the
    writer. A full disk raises DiskFull (the run.json written before stays as it was).
    """
    if record.status not in STATUSES:
        raise ValueError(f"status {record.status!r} is not one of {STATUSES}")
    bundle_dir = Path(bundle_dir)
    try:
        _write(record, bundle_dir)
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        raise DiskFull(disk_full_message(exc, bundle_dir)) from exc
    return bundle_dir


def _write(record: RunRecord, bundle_dir: Path) -> None:
    """The artifacts, then run.json; no folder or file of the bundle is a link (AebenchError)."""
    artifacts = own_folder(own_folder(bundle_dir) / ARTIFACTS_DIR)
    hashes = {}
    for artifact_path, source in sorted(record.artifacts.items()):
        relative = _safe_relative(artifact_path)
        target = own_folders(artifacts, relative.parent) / relative.name
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
        "writer": dataclasses.asdict(this_writer()),
    }
    write_text(bundle_dir / RUN_FILE, json.dumps(payload, indent=1) + "\n")  # a cut-off copy is removed


def copied_artifacts(record: RunRecord, bundle_dir: Path) -> dict[str, Path]:
    """The artifacts of ``record`` whose copy in ``bundle_dir`` is already complete (same bytes):
    what a bundle can keep when nothing more may be written."""
    kept = {}
    for artifact_path, source in record.artifacts.items():
        target = Path(bundle_dir) / ARTIFACTS_DIR / _safe_relative(artifact_path)
        copied = _sha256_or_none(target)
        if copied is not None and copied == _sha256_or_none(Path(source)):
            kept[artifact_path] = source
    return kept


def reserve_space(bundle_dir: Path) -> None:
    """Hold RESERVE_BYTES in ``bundle_dir`` so the bundle can still be ended when the disk fills
    up (release_space gives it back first). Best effort: on a disk already short of space, or
    under a file size limit, it keeps what it got. Made afresh, never through a link."""
    path = Path(bundle_dir) / RESERVE_FILE
    block = b"\0" * (64 * 1024)
    try:
        with os.fdopen(fresh_file(path), "wb") as f:
            for _ in range(RESERVE_BYTES // len(block)):
                f.write(block)
                f.flush()
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise


def release_space(bundle_dir: Path) -> None:
    """Remove the reserve of ``bundle_dir`` (see reserve_space), if there is one."""
    (Path(bundle_dir) / RESERVE_FILE).unlink(missing_ok=True)


def read_bundle(bundle_dir: Path) -> Bundle:
    """The bundle in ``bundle_dir``; AebenchError naming the file and field when it is not one,
    or naming the artifact that is not the bundle's own (see the module docstring)."""
    bundle_dir = Path(bundle_dir)
    run_file = bundle_dir / RUN_FILE
    refuse_link(run_file)
    if not run_file.is_file():
        raise AebenchError(
            f"{bundle_dir}: not a run bundle (no {RUN_FILE}); bundles are the "
            f"mlflow_bundle folders that 'aebench train' writes"
        )
    try:
        text = read_text(run_file)
        data = parse_json(text, run_file)
        if data.get("format") != FORMAT:
            raise AebenchError(f"{run_file}: format: {data.get('format')!r}; this aebench reads format {FORMAT}")
        hashes = {str(path): str(sha) for path, sha in dict(data["artifacts"]).items()}
        artifacts = {path: _artifact_file(bundle_dir, path) for path in hashes}
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
        writer = _read_writer(data.get("writer"))
        updated_ms = int(run_file.stat().st_mtime * 1000)
    except (KeyError, TypeError, ValueError) as exc:
        raise AebenchError(f"{run_file}: not a readable run bundle ({type(exc).__name__}: {exc})") from None
    if record.status not in STATUSES:
        raise AebenchError(f"{run_file}: status: {record.status!r}; allowed: {', '.join(STATUSES)}")
    # run.json lists every artifact's sha256, so its text identifies the whole bundle
    bundle = Bundle(bundle_dir, record, hashlib.sha256(text.encode()).hexdigest(), writer, updated_ms, hashes)
    if record.status != "RUNNING" or writer_gone(bundle):  # no process changes its artifacts any more
        for artifact_path, source in artifacts.items():
            _check_sha256(bundle, artifact_path, regular_sha256(source))
    return bundle


def _artifact_file(bundle_dir: Path, artifact_path: str) -> Path:
    """The file of an artifact run.json lists: a regular file inside the bundle, no link on the
    way to it; AebenchError naming it otherwise (nothing of the run is logged)."""
    relative = _safe_relative(artifact_path)
    folder = bundle_dir / ARTIFACTS_DIR
    on_the_way = [folder, *(folder.joinpath(*relative.parts[: n + 1]) for n in range(len(relative.parts)))]
    for step in on_the_way:
        if step.is_symlink():
            raise _not_own(bundle_dir, artifact_path, f"{step} is a symbolic link")
    path = on_the_way[-1]
    if not path.is_file():
        raise AebenchError(f"{bundle_dir / RUN_FILE}: artifacts: {artifact_path} is listed but {path} is missing")
    if not path.resolve().is_relative_to(bundle_dir.resolve()):
        raise _not_own(bundle_dir, artifact_path, f"{path} lies outside the bundle")
    return path


def _check_sha256(bundle: Bundle, artifact_path: str, sha: str) -> None:
    """AebenchError when ``sha`` is not the sha256 run.json lists for the artifact."""
    if sha != bundle.artifact_sha256.get(artifact_path):
        raise _not_own(bundle.path, artifact_path, "its bytes do not match the sha256 run.json lists for it")


def _not_own(bundle_dir: Path, artifact_path: str, why: str) -> AebenchError:
    """The one line for an artifact that is not the bundle's own regular file."""
    return AebenchError(
        f"{bundle_dir}: artifact {artifact_path!r}: {why}; aebench sends only the bundle's own regular files, "
        "so nothing of this run was logged and the bundle is kept as it is"
    )


@contextmanager
def staged_artifacts(bundle: Bundle) -> Iterator[dict[str, Path]]:
    """Artifact path -> a private copy of the artifact (same file name), for the block: each
    copied without following a link and checked against the sha256 run.json lists, so what is
    sent is what the bundle recorded even if the bundle changes after read_bundle."""
    with tempfile.TemporaryDirectory(prefix="aebench-artifacts-") as staging:
        staged = {}
        for number, artifact_path in enumerate(sorted(bundle.record.artifacts)):
            folder = own_folder(Path(staging) / str(number))
            copy = folder / PurePosixPath(artifact_path).name
            _check_sha256(bundle, artifact_path, copy_file(_artifact_file(bundle.path, artifact_path), copy))
            staged[artifact_path] = copy
        yield staged


def _read_writer(data: object) -> Optional[Writer]:
    if data is None:
        return None
    if not isinstance(data, dict):
        raise TypeError(f"writer is a {type(data).__name__}, not a mapping")
    return Writer(int(data["pid"]), str(data["host"]), str(data.get("started") or ""))


def find_bundles(path: Path, passed_over: Optional[Callable[[str], None]] = None) -> list[Path]:
    """``path`` if it is a bundle, else every bundle below it (a run.json of this format), sorted;
    AebenchError when there is none. Each run.json below ``path`` that is not a readable bundle
    is named to ``passed_over`` with the reason."""
    path = Path(path)
    if (path / RUN_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise AebenchError(f"{path}: no such bundle folder")
    found = []
    for run in sorted(path.rglob(RUN_FILE)):
        reason = _not_a_bundle(run)
        if not reason:
            found.append(run.parent)
        elif passed_over:
            passed_over(f"{run}: passed over, {reason}")
    if not found:
        raise AebenchError(
            f"{path}: holds no run bundle (a folder with {RUN_FILE}); bundles are the "
            "mlflow_bundle folders that 'aebench train' writes"
        )
    return found


def _not_a_bundle(run_file: Path) -> str:
    """Why ``run_file`` is not the run.json of a bundle ("" when it is one)."""
    try:
        data = read_json(run_file)
    except (OSError, ValueError, AebenchError) as exc:
        return f"unreadable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if isinstance(data, dict) and data.get("format") == FORMAT and "bundle_id" in data:
        return ""
    return f"not a run bundle of format {FORMAT}"


def note_logged(bundle_dir: Path, destination: dict) -> None:
    """Record in logged.json where the bundle went (one entry per tracking URI); AebenchError
    when logged.json is a link."""
    path = Path(bundle_dir) / LOGGED_FILE
    refuse_link(path)
    try:
        entries = read_json(path) if path.is_file() else {}
    except ValueError:
        entries = {}
    entries = entries if isinstance(entries, dict) else {}
    entries[destination["tracking_uri"]] = destination
    try:
        write_text(path, json.dumps(entries, indent=1) + "\n")
    except OSError as exc:
        if exc.errno not in DISK_FULL_ERRNOS:
            raise
        # only a note: MLflow's run tags are what make logging again find this run


def _copy_if_changed(source: Path, target: Path) -> str:
    """Copy the regular file ``source`` to ``target`` unless ``target`` holds its bytes already;
    the sha256 of the artifact. Neither is read or written through a link."""
    if not source.is_file():
        raise AebenchError(f"artifact {source}: no such file")
    sha = regular_sha256(source)
    return sha if _sha256_or_none(target) == sha else copy_file(source, target)


def _sha256_or_none(path: Path) -> Optional[str]:
    """sha256 of the regular file ``path``; None when it is missing, a link or not a regular file."""
    try:
        return regular_sha256(path)
    except (OSError, AebenchError):
        return None


def _safe_relative(artifact_path: str) -> Path:
    """An artifact path as a relative path that stays inside the bundle."""
    relative = Path(artifact_path)
    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
        raise AebenchError(f"artifact path {artifact_path!r}: must be relative, without '..'")
    return relative


def _json_number(value: float) -> object:
    """NaN and infinities as strings, so run.json stays standard JSON (float() reads them back)."""
    return value if math.isfinite(value) else str(value)
