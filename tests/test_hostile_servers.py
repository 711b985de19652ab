"""Tracking servers and stores that misbehave, and training runs stopped by signals (issue 18,
items 5, 6 and 12).

Every server is made here on 127.0.0.1 with http.server in threads: one that trickles its
answer a byte at a time (to /health, or to every API request while /health answers at once)
and one that answers /health and refuses the API at once, as an MLflow server with a bad
request would. Each test fails on the code before the issue: it hung, waited minutes, sent
credentials to name lookup, or left a bundle RUNNING. The whole file takes about 30 s on a
2-core CPU, most of it one framework import and the health deadline.
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import pytest
from cases import train_and_track
from test_cli_feedback import installed_backend, stopped_training
from test_compare_kinds import cell_row
from test_tracking import QUICK, needs_mlflow, small_record

from aebench.bench.store import safe_name
from aebench.cli.main import interrupted_message, main
from aebench.data.datasets import load_dataset
from aebench.spec.load import load_spec
from aebench.track import train_run
from aebench.track.bench_run import CellTracker, cell_record
from aebench.track.bundle import read_bundle, write_bundle
from aebench.track.tracking import HEALTH_DEADLINE_S, record
from aebench.track.train_run import TrackingOptions, TrainingInterrupted

END_REASON_TAG = "aebench.end_reason"  # tracking.END_REASON_TAG, spelled out as a user filters by it
PASSWORD = "S3CRET-pw"
TRICKLE_S = 0.5  # a byte every half second: under any per-read timeout, so only a whole-request deadline ends it
_T = TypeVar("_T")


# ---------------------------------------------------------------- servers made here


class Handler(http.server.BaseHTTPRequestHandler):
    """``server.mode``: ``slow-health`` trickles every answer; ``hung-api`` answers GET /health at
    once and trickles every other request's; ``refusing-api`` answers /health at once and every
    other request with MLflow's error body and HTTP 400. Each request is noted in ``server.seen``
    as (method, path, Authorization header)."""

    server: Any

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.answer()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.answer()

    def answer(self) -> None:
        self.server.seen.append((self.command, self.path.split("?")[0], self.headers.get("Authorization", "")))
        health = self.path.rstrip("/").endswith("/health")
        if self.server.mode == "slow-health" or (self.server.mode == "hung-api" and not health):
            self.trickle()
        elif health:
            self.send_body(200, b"OK")
        else:
            error = {"error_code": "INVALID_PARAMETER_VALUE", "message": "a test server, not MLflow"}
            self.send_body(400, json.dumps(error).encode())

    def trickle(self) -> None:
        """The status line, then a header line that never ends, a byte every TRICKLE_S."""
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not self.server.stopped.wait(TRICKLE_S):
                self.wfile.write(b"a")
        except OSError:
            pass  # the client gave up

    def send_body(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        pass


@pytest.fixture
def serve() -> Iterator[Callable[[str], Any]]:
    """Starts servers of a mode (Handler) on 127.0.0.1; each is stopped at the end of the test."""
    started = []

    def start(mode: str) -> Any:
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        httpd.daemon_threads = True
        httpd.mode, httpd.seen, httpd.stopped = mode, [], threading.Event()  # type: ignore[attr-defined]
        httpd.port = httpd.server_address[1]  # type: ignore[attr-defined]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        started.append(httpd)
        return httpd

    yield start
    for httpd in started:
        httpd.stopped.set()
        httpd.shutdown()
        httpd.server_close()


def finishes_within(seconds: float, call: Callable[[], _T]) -> tuple[_T, float]:
    """``call()``'s result and how long it took, run in a thread so that a call that never ends
    fails the test after ``seconds`` instead of hanging it."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - raised again in the test's thread
            done["error"] = exc

    started = time.monotonic()
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still waiting after {seconds} s"
    if "error" in done:
        raise done["error"]
    return done["value"], time.monotonic() - started


# ---------------------------------------------------------------- item 5: credentials in the URI


def test_credentials_in_the_uri_reach_no_name_lookup_and_no_output(
    serve: Callable[[str], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """The health check reaches the server (the run is not declared down), name lookup gets the
    host name alone, the credentials go to the server as HTTP basic auth (MLflow's requests) and
    no output line holds the password."""
    needs_mlflow()
    server = serve("refusing-api")
    looked_up: list[str] = []
    real_getaddrinfo = socket.getaddrinfo

    def recording(host: Any, *args: Any, **kwargs: Any) -> Any:
        looked_up.append(str(host))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", recording)
    outcome = record(small_record(tmp_path), tmp_path / "bundle", f"http://alice:{PASSWORD}@127.0.0.1:{server.port}/")
    assert ("GET", "/health", "") in server.seen, server.seen
    assert outcome.status == "kept" and "INVALID_PARAMETER_VALUE" in outcome.reason, outcome.reason
    basic = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
    assert any(path.startswith("/api/") and auth == basic for _, path, auth in server.seen), server.seen
    assert "127.0.0.1" in looked_up and not [host for host in looked_up if "@" in host or PASSWORD in host]
    out, err = capfd.readouterr()
    assert f"alice:***@127.0.0.1:{server.port}" in outcome.message()
    assert PASSWORD not in "\n".join([outcome.message(), out, err])


# ---------------------------------------------------------------- item 6: deadlines for every wait


def test_a_server_that_trickles_its_health_answer_costs_the_health_deadline(
    serve: Callable[[str], Any], tmp_path: Path
) -> None:
    """Headers a byte every 0.5 s never trip a per-read timeout; the whole request has HEALTH_DEADLINE_S."""
    needs_mlflow()
    server = serve("slow-health")
    run = small_record(tmp_path)
    outcome, took = finishes_within(
        HEALTH_DEADLINE_S + 15, lambda: record(run, tmp_path / "bundle", f"http://127.0.0.1:{server.port}")
    )
    assert outcome.status == "kept" and outcome.hung, outcome
    assert f"did not answer /health within {HEALTH_DEADLINE_S:g} s" in outcome.reason
    assert HEALTH_DEADLINE_S <= took < HEALTH_DEADLINE_S + 3
    assert read_bundle(tmp_path / "bundle").record.bundle_id == run.bundle_id


def test_a_hung_api_costs_one_deadline_per_campaign_and_per_log(
    serve: Callable[[str], Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """/health answers, the API trickles: the first cell waits one call deadline
    ($MLFLOW_HTTP_REQUEST_TIMEOUT, lowered to 2 s here), the next sends nothing and says why;
    ``aebench log`` of both bundles does the same. The call past its deadline cannot be stopped
    and lingers in its thread (aebench.deadline): one per campaign, one per log, never one per run."""
    needs_mlflow()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    server = serve("hung-api")
    folder = tmp_path / "campaign"
    (folder / "cells").mkdir(parents=True)
    (folder / "environment.json").write_text("{}")
    rows = [cell_row("torch", 20, 1.0), cell_row("jax", 20, 2.0)]
    for row in rows:
        (folder / "cells" / f"{safe_name(row['key'])}.json").write_text(json.dumps(row))
    tracker, cell = CellTracker(uri=f"http://127.0.0.1:{server.port}"), SimpleNamespace(spec="vae_toy")
    before = set(threading.enumerate())
    first, first_s = finishes_within(20, lambda: tracker(rows[0], cell, folder))
    second, second_s = finishes_within(20, lambda: tracker(rows[1], cell, folder))
    assert "did not answer within 2 s ($MLFLOW_HTTP_REQUEST_TIMEOUT sets how long)" in first and first_s < 5, first
    assert "not tried again: MLflow at http://127.0.0.1:" in second and second_s < 1, second
    assert [path for _, path, _ in server.seen].count("/health") == 1
    assert len(list((folder / "mlflow").glob("*/run.json"))) == 2
    assert len(lingering(before)) == 1

    code, took = finishes_within(20, lambda: main(["log", str(folder / "mlflow"), "--tracking-uri", tracker.uri]))
    lines = capsys.readouterr().out.splitlines()
    assert code == 1 and took < 5 and len(lines) == 2, lines
    assert "did not answer within 2 s" in lines[0] and "not tried again" in lines[1], lines
    assert len(lingering(before)) == 2


def lingering(before: set[threading.Thread]) -> list[threading.Thread]:
    """The tracking calls left waiting in their threads since ``before``."""
    return [t for t in threading.enumerate() if t not in before and t.name == "aebench-tracking-call"]


@pytest.mark.parametrize("store", ["a folder", "a file that is not a database"])
def test_an_unusable_sqlite_store_is_one_line_at_once(store: str, tmp_path: Path) -> None:
    """MLflow retried such a store for about two minutes, a warning line each time."""
    needs_mlflow()
    path = tmp_path / "mlflow.db"
    if store == "a folder":
        path.mkdir()
    else:
        path.write_text("not a database\n" * 10)
    run = small_record(tmp_path)
    outcome, took = finishes_within(20, lambda: record(run, tmp_path / "bundle", f"sqlite:///{path}"))
    expected = "is a folder, not a database file" if store == "a folder" else "is not an SQLite database"
    assert outcome.status == "kept" and outcome.reason == f"the MLflow store {path} {expected}", outcome.reason
    assert took < 3 and "aebench log" in outcome.message()


def test_the_default_store_in_a_working_directory_that_takes_no_file_is_one_line(tmp_path: Path) -> None:
    """``aebench log`` run in /proc (no file can be made there, even by root) with the default
    store: one line and exit 1, in seconds."""
    needs_mlflow()
    if not Path("/proc/self").is_dir():
        pytest.skip("needs Linux's /proc: a folder no process can make a file in")
    bundle = write_bundle(small_record(tmp_path), tmp_path / "bundle")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "log", str(bundle)],
        capture_output=True,
        text=True,
        cwd="/proc",
        env=env,
        timeout=60,
    )
    assert proc.returncode == 1 and proc.stderr == "", proc.stderr[-2000:]
    (line,) = proc.stdout.splitlines()
    assert "MLflow logging skipped (the MLflow store /proc/mlflow.db cannot be written: " in line, line
    assert f"log it later with: aebench log {bundle}" in line


# ---------------------------------------------------------------- item 12: signals and reasons


def test_sigterm_ends_a_training_as_killed_with_one_line_and_exit_143(tmp_path: Path) -> None:
    """A real `aebench train vae_toy --no-mlflow` sent SIGTERM once its first epoch is reported."""
    out = tmp_path / "run"
    code, stderr = stopped_training(out, signal.SIGTERM)
    assert code == 143 and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    kept = re.escape(str(out / "mlflow_bundle"))
    assert re.fullmatch(
        rf"aebench: terminated \(SIGTERM\) after \d+ epochs?: the run folder {re.escape(str(out))} is kept, "
        rf"its run ended as KILLED; MLflow logging skipped \(MLflow logging switched off\); the run is kept in "
        rf"{kept}; log it later with: aebench log {kept}",
        last,
    ), last
    bundle = read_bundle(out / "mlflow_bundle")
    assert bundle.record.status == "KILLED"
    assert re.fullmatch(r"terminated \(SIGTERM\) after \d+ epoch\(s\)", bundle.record.tags[END_REASON_TAG])


@pytest.mark.parametrize("gap", [0.0, 0.001])
def test_a_second_signal_milliseconds_after_the_first_still_leaves_the_run_killed(tmp_path: Path, gap: float) -> None:
    """SIGTERM, then SIGINT ``gap`` seconds later, to a real `aebench train`: before, the second cut
    the write of the KILLED status short, leaving the bundle RUNNING (every try at 0 and 1 ms),
    and the one line said only 'terminated (SIGTERM)' or claimed the run ended as KILLED."""
    out = tmp_path / "run"
    code, stderr = stopped_training(out, signal.SIGTERM, signal.SIGINT, gap=gap)
    assert code in (130, 143) and "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    folder = re.escape(str(out))
    assert re.search(rf"after \d+ epochs?: the run folder {folder} is kept, its run ended as KILLED; ", last), last
    assert read_bundle(out / "mlflow_bundle").record.status == "KILLED"


@pytest.fixture(scope="module")
def cheap_backend():
    from aebench.plugins.registry import load_backend

    return load_backend(installed_backend())


def toy(epochs: int):
    """vae_toy (1,024 two-number examples) for ``epochs`` epochs, and its data."""
    spec = load_spec("vae_toy")
    spec = spec.replace(train=dataclasses.replace(spec.train, epochs=epochs))
    return spec, load_dataset(spec)


def test_a_second_ctrl_c_while_the_run_is_finished_leaves_it_killed(
    cheap_backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first Ctrl-C after epoch 1, the second while the loss curves are drawn (the finishing,
    before MLflow): the bundle was ended as KILLED before either, and one line says so."""
    spec, data = toy(epochs=3)

    def first_ctrl_c(row: dict) -> None:
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    def second_ctrl_c(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_run, "write_loss_curves", second_ctrl_c)
    options = TrackingOptions(log=False, quality=QUICK)
    with pytest.raises(KeyboardInterrupt) as stopped:  # not TrainingInterrupted: a bare one would end pytest
        train_and_track(spec, cheap_backend, data, tmp_path, options, after_epoch=first_ctrl_c)
    bundle = read_bundle(tmp_path / "mlflow_bundle")
    assert bundle.record.status == "KILLED"
    assert bundle.record.tags[END_REASON_TAG] == "interrupted (SIGINT, Ctrl-C) after 1 epoch(s)"
    assert isinstance(stopped.value, TrainingInterrupted)
    assert interrupted_message(stopped.value) == (
        f"interrupted after 1 epoch: the run folder {tmp_path} is kept, its run ended as KILLED; "
        "MLflow logging skipped (interrupted (SIGINT, Ctrl-C) while the run was being finished); "
        f"the run is kept in {tmp_path / 'mlflow_bundle'}; log it later with: aebench log {tmp_path / 'mlflow_bundle'}"
    )


def test_failed_train_runs_and_bench_cells_carry_their_reason(cheap_backend, tmp_path: Path) -> None:
    spec, data = toy(epochs=2)

    def fail(row: dict) -> None:
        if row["epoch"] == 1:
            raise RuntimeError("the loss went to the moon")

    options = TrackingOptions(log=False, quality=QUICK)
    with pytest.raises(RuntimeError):
        train_and_track(spec, cheap_backend, data, tmp_path, options, after_epoch=fail)
    bundle = read_bundle(tmp_path / "mlflow_bundle")
    assert bundle.record.status == "FAILED"
    assert bundle.record.tags[END_REASON_TAG] == "RuntimeError: the loss went to the moon"

    failed = {**cell_row("torch", 20, 1.0), "status": "failed", "reason": "out of memory: batch size 4096"}
    cell = cell_record(failed, "vae_toy", "demo", {}, {})
    assert cell.status == "FAILED" and cell.tags[END_REASON_TAG] == "out of memory: batch size 4096"
    assert END_REASON_TAG not in cell_record(cell_row("torch", 20, 1.0), "vae_toy", "demo", {}, {}).tags
