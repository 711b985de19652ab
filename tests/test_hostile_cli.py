"""Issue 11, the command line: fetch-mnist against hostile servers and URLs, --version, and
argument errors that come before any framework is imported (a real aebench process each)."""

from __future__ import annotations

import hashlib
import http.server
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest

from aebench.cli.main import main
from aebench.data.datasets import MNIST_MAX_BYTES, MNIST_SHA256, fetch_mnist
from aebench.errors import DataError

ALLOWED = "allowed: http:// or https:// URLs with a host"
FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "flax", "optax")
CHUNK = 1 << 20


def aebench(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, timeout=timeout, env=os.environ
    )


def one_error_line(stderr: str) -> str:
    """The only line of ``stderr``; fails on a traceback or several lines."""
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and len(lines) == 1, stderr[-2000:]
    return lines[0]


class Hostile(http.server.BaseHTTPRequestHandler):
    """Paths: /trickle (a byte every 50 ms of a declared 11 MB), /endless (bytes without a length
    until the client leaves), /declared-huge (a 1 GB Content-Length), /wrong (11 bytes that are
    not MNIST), /redirect (to redirect_to), /mnist (the real file, if given)."""

    sent: dict[str, int] = {}
    mnist: Path | None = None
    redirect_to = ""

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        route = getattr(self, "route_" + self.path.strip("/").replace("-", "_"), None)
        if route is None:
            self.send_error(404)
            return
        try:
            route()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client stopped reading, as it should

    def headers_with_length(self, length: int | None) -> None:
        self.send_response(200)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def route_trickle(self) -> None:
        self.headers_with_length(11_490_434)
        for _ in range(400):  # 20 s at most, so a client without a deadline still ends
            self.wfile.write(b"x")
            self.wfile.flush()
            time.sleep(0.05)

    def route_endless(self) -> None:
        self.headers_with_length(None)
        self.close_connection = True
        block = b"\0" * CHUNK
        self.sent["endless"] = 0
        for _ in range(1024):  # 1 GB at most
            self.wfile.write(block)
            self.sent["endless"] += CHUNK

    def route_declared_huge(self) -> None:
        self.headers_with_length(1 << 30)
        self.sent["declared_huge"] = 0
        for _ in range(1024):
            self.wfile.write(b"\0" * CHUNK)
            self.sent["declared_huge"] += CHUNK

    def route_wrong(self) -> None:
        self.headers_with_length(11)
        self.wfile.write(b"not mnist!!")

    def route_redirect(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.redirect_to)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def route_mnist(self) -> None:
        assert self.mnist is not None
        payload = self.mnist.read_bytes()
        self.headers_with_length(len(payload))
        self.wfile.write(payload)


@pytest.fixture
def server() -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 in a thread; its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize(
    "url", ["data:,hello", "ftp://127.0.0.1/m.npz", "gopher://127.0.0.1/", "http:///no-host", "http://[::1", "x" * 5000]
)
def test_fetch_mnist_refuses_every_url_but_http_and_https(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fetch-mnist", "--url", url, "--dest", str(tmp_path / "mnist.npz")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith("aebench: error: --url: ") and line.endswith(ALLOWED) and len(line) < 300
    assert not list(tmp_path.iterdir())


def test_file_urls_are_refused_by_the_command_without_reading(tmp_path: Path) -> None:
    proc = aebench("fetch-mnist", "--url", "file:///dev/zero", "--dest", str(tmp_path / "mnist.npz"), timeout=60)
    assert proc.returncode == 2
    assert one_error_line(proc.stderr) == f"aebench: error: --url: 'file:///dev/zero' is not allowed; {ALLOWED}"
    assert not list(tmp_path.iterdir())


def test_a_trickling_server_ends_at_the_total_deadline(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "mnist.npz"
    started = time.monotonic()
    with pytest.raises(DataError, match=r"did not finish within 1\.5 s \(--timeout\)"):
        fetch_mnist(dest, url=f"{server}/trickle", timeout=1.5)
    assert time.monotonic() - started < 3.0
    assert not list(tmp_path.iterdir()), "a failed download leaves nothing behind"


def test_a_host_name_lookup_that_never_answers_ends_at_the_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """getaddrinfo takes no timeout: a resolver that does not answer must not outlast --timeout."""
    answer = threading.Event()

    def silent_resolver(*args: object, **kwargs: object) -> list:
        answer.wait(60)
        raise OSError("the resolver answered after the test")

    monkeypatch.setattr(socket, "getaddrinfo", silent_resolver)
    started = time.monotonic()
    try:
        with pytest.raises(DataError, match=r"did not finish within 1 s \(--timeout\), 0 bytes read"):
            fetch_mnist(tmp_path / "mnist.npz", url="http://mnist.example/mnist.npz", timeout=1)
        assert time.monotonic() - started < 2.0
    finally:
        answer.set()
    assert not list(tmp_path.iterdir()), "a failed download leaves nothing behind"


def test_a_trickling_server_gives_one_line_from_the_command(server: str, tmp_path: Path) -> None:
    proc = aebench("fetch-mnist", "--url", f"{server}/trickle", "--timeout", "1", "--dest", str(tmp_path / "m.npz"))
    assert proc.returncode == 2
    assert "did not finish within 1 s (--timeout)" in one_error_line(proc.stderr)
    assert not list(tmp_path.iterdir())


def test_an_endless_download_stops_at_the_size_cap(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"more than {MNIST_MAX_BYTES >> 20} MB"):
        fetch_mnist(tmp_path / "mnist.npz", url=f"{server}/endless", timeout=60)
    time.sleep(0.5)  # let the server notice the closed connection
    assert Hostile.sent["endless"] <= MNIST_MAX_BYTES + 32 * CHUNK  # socket buffers hold a few MB more
    assert not list(tmp_path.iterdir())


def test_a_declared_size_over_the_cap_is_refused_before_reading(server: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"announces 1024 MB, more than"):
        fetch_mnist(tmp_path / "mnist.npz", url=f"{server}/declared-huge", timeout=60)
    time.sleep(0.5)
    assert Hostile.sent["declared_huge"] <= 32 * CHUNK
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("target", ["file:///dev/zero", "ftp://127.0.0.1/mnist.npz"])
def test_a_redirect_to_another_scheme_is_refused(target: str, server: str, tmp_path: Path) -> None:
    Hostile.redirect_to = target
    with pytest.raises(DataError, match=f"answered with a redirect to '{target}'; {ALLOWED}"):
        fetch_mnist(tmp_path / "mnist.npz", url=f"{server}/redirect", timeout=10)
    assert not list(tmp_path.iterdir())


def test_a_wrong_file_leaves_the_old_destination_untouched(server: str, tmp_path: Path) -> None:
    dest = tmp_path / "mnist.npz"
    dest.write_bytes(b"what was there before")
    with pytest.raises(DataError, match="has sha256 .*expected"):
        fetch_mnist(dest, url=f"{server}/wrong", timeout=10)
    assert dest.read_bytes() == b"what was there before"
    assert [p.name for p in tmp_path.iterdir()] == ["mnist.npz"]


def test_the_real_file_is_fetched_over_http(server: str, full_mnist: Path, tmp_path: Path) -> None:
    Hostile.mnist = full_mnist
    dest = tmp_path / "cache" / "mnist.npz"
    proc = aebench("fetch-mnist", "--url", f"{server}/mnist", "--dest", str(dest))
    assert proc.returncode == 0, proc.stderr
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == MNIST_SHA256
    assert [p.name for p in dest.parent.iterdir()] == ["mnist.npz"]


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "soon"])
def test_fetch_mnist_timeout_must_be_a_positive_number(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["fetch-mnist", "--timeout", value, "--url", "http://127.0.0.1:9/"])
    assert exited.value.code == 2
    assert "argument --timeout: must be a number > 0" in one_error_line(capsys.readouterr().err)


def test_version_prints_the_installed_version() -> None:
    proc = aebench("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"aebench {version('aebench')}"


def imported_frameworks(importtime_log: str) -> set[str]:
    """Top-level framework packages named in ``python -X importtime`` output."""
    names = {line.rsplit("|", 1)[1].strip() for line in importtime_log.splitlines() if line.startswith("import time:")}
    return {name.split(".")[0] for name in names} & set(FRAMEWORKS)


def aebench_importtime(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "aebench.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ,
    )
    return proc, imported_frameworks(proc.stderr)


def test_list_imports_no_framework_and_says_what_is_installed() -> None:
    proc, frameworks = aebench_importtime("list")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert frameworks == set()
    backends = proc.stdout.split("backends", 1)[1]
    assert "torch" in backends and ("installed" in backends)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "vae_dense", "--backend", "nope"], "--backend: no backend 'nope'"),
        (["train", "vae_dense", "--data", "/nonexistent/mnist.npz"], "--data: no MNIST file at /nonexistent/mnist.npz"),
        (["train", "vae_dense", "--epochs", "0"], "--epochs: must be a whole number >= 1"),
        (["check", "vae_toy", "--backends", "torch,nope"], "--backends: no backend 'nope'"),
        (["check", "no_such_spec"], "no_such_spec: no such spec file or shipped spec"),
        (["bench", "--backends", "nope"], "--backends: no backend 'nope'"),
        (["bench", "--modes", "nope"], "--modes: must be one of"),
        (["report", "/nonexistent"], "/nonexistent: no such campaign folder"),
        (["log", "/nonexistent"], "/nonexistent: no such bundle folder"),
        (["validate", "/nonexistent.yaml"], "/nonexistent.yaml: no such file"),
        (["fetch-mnist", "--url", "file:///dev/zero"], "--url: "),
        (["train", "vae_toy", "--out", "/proc/version"], "--out: /proc/version is a file, not a folder"),
        (["train", "vae_toy", "--out", "/proc/no-folder-here"], "--out: cannot write to /proc/no-folder-here"),
    ],
)
def test_argument_errors_come_before_any_framework_import(args: list[str], message: str) -> None:
    proc, frameworks = aebench_importtime(*args)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(errors) == 1 and message in errors[0], errors
    assert frameworks == set(), f"{' '.join(args)} imported {sorted(frameworks)} before its error"


def limited_file_size(limit_bytes: int) -> None:
    """In a child process: writes past ``limit_bytes`` fail with EFBIG (as on a full disk), not SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def test_a_write_the_disk_refuses_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """``report`` on the committed H100 campaign, with files limited to 2 KB: one line, exit 1, no traceback."""
    campaign = Path(__file__).resolve().parents[1] / "results" / "gpu-h100-2026-11-22"
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "report", str(campaign), "--out", str(tmp_path / "report")],
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=lambda: limited_file_size(2048),
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    line = one_error_line(proc.stderr)
    assert "File too large" in line and "run the same command again" in line, line
