"""What the command tells its user while it works and when it is stopped, and what it leaves
behind for git: Ctrl-C during training names the run folder and what became of the run,
`aebench check` says which backend it is loading, the tracking store's files are ignored."""

from __future__ import annotations

import fnmatch
import importlib.util
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aebench.cli.main import interrupted_message, main
from aebench.track.tracking import DEFAULT_TRACKING_URI, LogOutcome, sqlite_path, store_lock
from aebench.track.train_run import TrainingInterrupted

REPO = Path(__file__).resolve().parents[1]


def installed_backend() -> str:
    """torch, else jax: the first whose framework is installed, found without importing any
    (cases.cheap_backend loads every framework to ask, 10 s and more on a 2-core CPU)."""
    name = next((b for b in ("torch", "jax") if importlib.util.find_spec(b) is not None), None)
    if name is None:
        pytest.skip("neither torch nor jax is installed")
    return name


def stopped_training(out: Path, stop: signal.Signals, *more: signal.Signals, gap: float = 0.0) -> tuple[int, str]:
    """A real `aebench train vae_toy --no-mlflow` writing to ``out``, sent ``stop`` once its first
    epoch is reported (3 to 8 s on a 2-core CPU, mostly the framework's import), then each of
    ``more`` ``gap`` seconds apart: its exit code and all it wrote to stderr."""
    command = [sys.executable, "-m", "aebench.cli", "train", "vae_toy", "--backend", installed_backend()]
    command += ["--epochs", "1000", "--out", str(out), "--no-mlflow"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=out.parent)
    seen, deadline = [], threading.Timer(120, proc.kill)  # a training that never reports an epoch ends the test
    deadline.start()
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            seen.append(line)
            if line.startswith("epoch 1:"):
                proc.send_signal(stop)
                for then in more:
                    time.sleep(gap)
                    proc.send_signal(then)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        deadline.cancel()
        proc.kill()
    return proc.returncode, "".join(seen) + (rest or "")


def test_ctrl_c_during_training_names_the_run_folder_and_the_killed_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    code, rest = stopped_training(out, signal.SIGINT)
    last = rest.strip().splitlines()[-1]
    assert code == 130, rest
    bundle = out / "mlflow_bundle"
    folder, kept = re.escape(str(out)), re.escape(str(bundle))
    assert re.fullmatch(
        rf"aebench: interrupted after \d+ epochs?: the run folder {folder} is kept, its run ended as KILLED; "
        rf"MLflow logging skipped \(MLflow logging switched off\); the run is kept in {kept}; "
        rf"log it later with: aebench log {kept}",
        last,
    ), last
    assert '"status": "KILLED"' in (bundle / "run.json").read_text()
    assert "Traceback" not in rest


def test_an_interrupted_run_that_was_logged_says_so() -> None:
    outcome = LogOutcome("logged", Path("runs/x/mlflow_bundle"), "sqlite:///mlflow.db", "abc", "1", "", "KILLED")
    assert interrupted_message(TrainingInterrupted(Path("runs/x"), 1, outcome)) == (
        "interrupted after 1 epoch: the run folder runs/x is kept; "
        "logged MLflow run abc as KILLED (experiment 1) at sqlite:///mlflow.db"
    )
    assert interrupted_message(KeyboardInterrupt()) == "interrupted"


def test_check_says_which_backend_it_loads_and_how_long_it_took(capfd: pytest.CaptureFixture) -> None:
    backend = installed_backend()
    assert main(["check", "vae_toy", "--backends", backend, "--dtype", "float64"]) == 0
    err = capfd.readouterr().err.splitlines()
    loading = err.index(f"loading {backend} ...")
    assert re.fullmatch(rf"loaded {backend} in \d+\.\d s \(.+\)", err[loading + 1]), err
    assert err[loading + 2].startswith("checking [1/1]")


def test_the_default_tracking_stores_files_are_git_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.db and the lock beside it (tracking.store_lock), made where a user runs aebench."""
    monkeypatch.chdir(tmp_path)
    with store_lock(DEFAULT_TRACKING_URI):
        made = sorted(p.name for p in tmp_path.iterdir())
    database = sqlite_path(DEFAULT_TRACKING_URI)
    assert database is not None and made == [database.name + ".lock"]
    patterns = [line.strip() for line in (REPO / ".gitignore").read_text().splitlines()]
    for name in [database.name, *made]:
        assert any(fnmatch.fnmatch(name, p) for p in patterns if p and not p.startswith("#")), name
