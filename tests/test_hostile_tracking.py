"""Hostile and concurrent use of MLflow tracking (issue 11, items 7, 8 and 11's compare).

Two processes opening one new SQLite store at once, a disk that fills up mid-training (a
file size limit and, where user namespaces allow it, a real full tmpfs), runs killed with
SIGKILL or still running when ``aebench log`` meets their bundle, and ``aebench compare``
of runs whose settings differ. Every store is a real SQLite file in tmp_path.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_tracking import aebench, needs_mlflow, small_record

from aebench.track.bundle import RUN_FILE, RunRecord, read_bundle, write_bundle
from aebench.track.compare import compare
from aebench.track.tracking import log_bundle, record, store_lock

END_REASON_TAG = "aebench.end_reason"  # tracking.END_REASON_TAG, spelled out as a user filters by it
TRAIN_QUICK = ("--epochs", "1", "--nll-k", "4", "--nll-examples", "8")


def sqlite_uri(folder: Path) -> str:
    return f"sqlite:///{folder / 'mlflow.db'}"


def only_run(client, experiment: str):
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return run


# ---------------------------------------------------------------- item 7: a new store, two processes at once

LOG_WHEN_TOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mlflow  # imported before the start signal, so all processes open their store together
    from aebench.track.bundle import RunRecord
    from aebench.track.tracking import record

    folder, uri, ready, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
    run = RunRecord(experiment="aebench/demo", run_name=folder.name, params={"train.epochs": "1"})
    run.add_metrics({"train/total": 1.0}, step=1)
    ready.touch()
    while not go.exists():
        time.sleep(0.005)
    outcome = record(run, folder / "bundle", uri)
    print(outcome.status, outcome.run_id, outcome.reason)
    """
)


def test_processes_on_a_new_sqlite_store_all_log(tmp_path: Path) -> None:
    """Three processes log to one new store at once. Without the lock, MLflow's migrations of
    the new store collide (duplicate column, table exists, alembic_version mismatch) and one
    or more runs are kept, not logged."""
    mlflow = needs_mlflow()
    script = tmp_path / "log_when_told.py"
    script.write_text(LOG_WHEN_TOLD)
    go, uri = tmp_path / "go", sqlite_uri(tmp_path)
    procs, ready = [], []
    for writer in ("a", "b", "c"):
        ready.append(tmp_path / f"{writer}.ready")
        args = [str(script), str(tmp_path / writer), uri, str(ready[-1]), str(go)]
        procs.append(subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    deadline = time.monotonic() + 120
    while not all(path.exists() for path in ready) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outputs = [proc.communicate(timeout=120) for proc in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0 and out.decode().startswith("logged "), out.decode() + err.decode()[-2000:]
    client = mlflow.MlflowClient(uri)
    assert len(client.search_runs([client.get_experiment_by_name("aebench/demo").experiment_id])) == 3
    assert (tmp_path / "mlflow.db.lock").is_file()


def test_a_store_in_a_folder_not_made_yet_is_locked_too(tmp_path: Path) -> None:
    """MLflow makes a new store's folder itself; the lock must not be skipped because the
    folder did not exist yet when the first process arrived."""
    uri = sqlite_uri(tmp_path / "new" / "folder")
    with store_lock(uri), open(tmp_path / "new" / "folder" / "mlflow.db.lock") as other:
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_store_where_no_lock_can_be_made_keeps_the_run_and_says_why(tmp_path: Path) -> None:
    """A file where the store's folder should be: no lock, no traceback; the run is kept as a
    bundle and one line says why it was not logged and how to log it later."""
    needs_mlflow()
    (tmp_path / "a-file").write_text("not a folder")
    uri = sqlite_uri(tmp_path / "a-file")
    with store_lock(uri):
        pass
    proc = aebench("train", "vae_toy", "--backend", "torch", *TRAIN_QUICK, "--tracking-uri", uri, cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (skipped,) = [line for line in proc.stdout.splitlines() + proc.stderr.splitlines() if "MLflow logging" in line]
    assert "File exists" in skipped and "log it later with: aebench log " in skipped, skipped
    (bundle,) = (tmp_path / "runs").glob("*/mlflow_bundle")
    assert read_bundle(bundle).record.status == "FINISHED"


# ---------------------------------------------------------------- item 8: full disks


def limit_file_size(limit: int):
    """A preexec_fn: no file of the child may grow past ``limit`` bytes (writes past it fail
    with EFBIG, as on a full disk, instead of killing it with SIGXFSZ)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def assert_one_line_disk_full(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("aebench: error: no space left on device writing "), last
    assert "FAILED" in last and "aebench log" in last, last


def test_a_file_size_limit_mid_training_is_one_line_and_a_failed_run(tmp_path: Path) -> None:
    """RLIMIT_FSIZE 16 KB: the small files fit, the first figure (~30 KB) fails with EFBIG."""
    mlflow = needs_mlflow()
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "train", "vae_toy", *TRAIN_QUICK, "--out", "run", "--no-mlflow"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size(16_000),
        timeout=300,
    )
    assert_one_line_disk_full(proc)
    bundle = read_bundle(tmp_path / "run" / "mlflow_bundle")
    assert bundle.record.status == "FAILED" and bundle.record.end_time
    assert bundle.record.tags[END_REASON_TAG].startswith("no space left on device writing ")
    assert {m.key for m in bundle.record.metrics} >= {"train/total", "test/total"}

    uri = sqlite_uri(tmp_path)
    outcome = log_bundle(bundle.path, uri)
    assert outcome.status == "logged", outcome.reason
    run = mlflow.MlflowClient(uri).get_run(outcome.run_id)
    assert run.info.status == "FAILED" and "no space left" in run.data.tags[END_REASON_TAG]


def can_mount_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-r", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt 2>/dev/null || exit 3"],
        capture_output=True,
    )
    return probe.returncode == 0


FULL_TMPFS_TRAIN = textwrap.dedent(
    """
    set -u
    mount -t tmpfs -o size=360k tmpfs "$DISK"
    "$PYTHON" -m aebench.cli train vae_toy --epochs 1 --nll-k 4 --nll-examples 8 --out "$DISK/run" --no-mlflow \
        >"$KEEP/stdout" 2>"$KEEP/stderr"
    echo $? >"$KEEP/rc"
    cp -r "$DISK/run/mlflow_bundle" "$KEEP/bundle"
    """
)


@pytest.mark.skipif(not can_mount_tmpfs(), reason="no user and mount namespaces here (unshare -r -m) for a small tmpfs")
def test_a_really_full_disk_is_one_line_and_a_failed_run(tmp_path: Path) -> None:
    """A 360 KB tmpfs in a private mount namespace: the disk fills up while the figures are written."""
    disk, keep = tmp_path / "disk", tmp_path / "keep"
    disk.mkdir()
    keep.mkdir()
    env = {**os.environ, "DISK": str(disk), "KEEP": str(keep), "PYTHON": sys.executable}
    namespace = ["unshare", "-r", "-m", "sh", "-c", FULL_TMPFS_TRAIN]
    subprocess.run(namespace, env=env, cwd=tmp_path, timeout=300, check=True)
    proc = subprocess.CompletedProcess([], int((keep / "rc").read_text()), "", (keep / "stderr").read_text())
    assert_one_line_disk_full(proc)
    assert "No space left on device" in proc.stderr
    bundle = read_bundle(keep / "bundle")
    assert bundle.record.status == "FAILED"
    assert bundle.record.tags[END_REASON_TAG].startswith("no space left on device writing ")


# ---------------------------------------------------------------- item 8: runs killed or still running

WRITE_RUNNING_BUNDLE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aebench.track.bundle import RunRecord, write_bundle

    run = RunRecord(experiment="aebench/demo", run_name="demo-torch-train", status="RUNNING",
                    params={"train.epochs": "5"}, tags={"spec": "demo", "backend": "torch"})
    run.add_metrics({"train/total": 0.5}, step=1)
    write_bundle(run, Path(sys.argv[1]))
    print("written", flush=True)
    time.sleep(float(sys.argv[2]))
    """
)


def start_writer(tmp_path: Path, bundle: Path, stay_s: float) -> subprocess.Popen:
    script = tmp_path / "write_running_bundle.py"
    script.write_text(WRITE_RUNNING_BUNDLE)
    proc = subprocess.Popen([sys.executable, str(script), str(bundle), str(stay_s)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "written\n"
    return proc


def test_a_running_bundle_is_left_for_later_then_logged_as_killed(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri, bundle = sqlite_uri(tmp_path), tmp_path / "bundle"
    writer = start_writer(tmp_path, bundle, stay_s=300)
    try:
        proc = aebench("log", str(bundle), "--tracking-uri", uri, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.count("\n") == 1 and f"still being written by pid {writer.pid}" in proc.stdout
        assert "left for later" in proc.stdout
        assert not (tmp_path / "mlflow.db").exists()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    outcome = log_bundle(bundle, uri)
    assert outcome.status == "logged", outcome.reason
    run = mlflow.MlflowClient(uri).get_run(outcome.run_id)
    assert run.info.status == "KILLED" and run.info.end_time
    assert run.data.metrics == {"train/total": 0.5}
    assert f"pid {writer.pid}" in run.data.tags[END_REASON_TAG]
    assert log_bundle(bundle, uri).status == "skipped"


def test_a_bundle_whose_process_has_ended_is_killed_not_running(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri, bundle = sqlite_uri(tmp_path), tmp_path / "bundle"
    start_writer(tmp_path, bundle, stay_s=0).wait(timeout=30)
    outcome = log_bundle(bundle, uri)
    assert outcome.status == "logged" and "as KILLED" in outcome.message(), outcome.reason
    assert only_run(mlflow.MlflowClient(uri), "aebench/demo").info.status == "KILLED"


def test_a_bundle_from_another_host_is_killed_once_it_is_stale(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri, bundle = sqlite_uri(tmp_path), tmp_path / "bundle"
    write_bundle(RunRecord(experiment="aebench/demo", run_name="far", status="RUNNING"), bundle)
    run_file = bundle / RUN_FILE
    data = json.loads(run_file.read_text())
    data["writer"]["host"] = "another-host.example"  # as a bundle copied from the machine that ran it
    run_file.write_text(json.dumps(data))
    waiting = log_bundle(bundle, uri)
    assert waiting.status == "running" and not waiting.logged
    assert "another-host.example" in waiting.message() and "left for later" in waiting.message()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(run_file, (two_days_ago, two_days_ago))
    assert log_bundle(bundle, uri).status == "logged"
    assert only_run(mlflow.MlflowClient(uri), "aebench/demo").info.status == "KILLED"


def test_a_run_logged_running_earlier_is_ended_as_killed(tmp_path: Path) -> None:
    """A store that already holds the bundle as a RUNNING run (logged by an older aebench)."""
    mlflow = needs_mlflow()
    uri, bundle = sqlite_uri(tmp_path), tmp_path / "bundle"
    start_writer(tmp_path, bundle, stay_s=0).wait(timeout=30)
    run = read_bundle(bundle)
    client = mlflow.MlflowClient(uri)
    from aebench.track.tracking import BUNDLE_DIGEST_TAG, BUNDLE_ID_TAG

    earlier = client.create_run(
        client.create_experiment("aebench/demo"),
        tags={BUNDLE_ID_TAG: run.record.bundle_id, BUNDLE_DIGEST_TAG: run.digest},
    )
    outcome = log_bundle(bundle, uri)
    assert (outcome.status, outcome.run_id) == ("completed", earlier.info.run_id)
    assert client.get_run(earlier.info.run_id).info.status == "KILLED"


# ---------------------------------------------------------------- item 11: compare runs whose settings differ


def test_compare_warns_about_settings_that_differ_and_shows_the_largest_difference(tmp_path: Path) -> None:
    needs_mlflow()
    pytest.importorskip("pandas", reason="pandas is not installed (pip install 'aebench[tracking]')")
    uri = sqlite_uri(tmp_path)
    for backend, loss, epochs in (("torch", 1.0, "5"), ("jax", 2.0, "1")):
        run = small_record(tmp_path / backend, backend, loss)
        run.params.update({"train.epochs": epochs, "train.batch_size": "32"})
        assert record(run, tmp_path / "bundles" / backend, uri).logged
    proc = aebench("compare", "--tracking-uri", uri, "--csv", "table.csv", "--markdown", "table.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "aebench: warning: demo (train, float32): train.epochs differs between the runs compared: jax 1, torch 5"
    ]
    lines = proc.stdout.splitlines()
    settings = next(line.split() for line in lines if "train.epochs" in line)
    assert settings[-3:] == ["train.epochs", "1", "5"]
    assert not any("train.batch_size" in line for line in lines)
    header = next(line.split() for line in lines if line.endswith("largest_diff_%"))
    assert header[-2:] == ["largest_diff", "largest_diff_%"]
    psnr = next(line.split() for line in lines if "quality/psnr" in line)
    assert psnr[-2:] == ["10", "83.3%"]  # 22 against 12: 10 apart, 83.3% of the smaller
    total = next(line.split() for line in lines if "train/total" in line)
    assert total[-2:] == ["0.3333", "100.0%"]
    assert (tmp_path / "table.csv").read_text().splitlines()[0].endswith(",largest_diff,largest_diff_%")
    markdown = (tmp_path / "table.md").read_text()
    assert "| train.epochs | 1 | 5 |" in markdown and "largest_diff" in markdown


def test_compare_of_runs_with_the_same_settings_warns_of_nothing(tmp_path: Path) -> None:
    needs_mlflow()
    pytest.importorskip("pandas", reason="pandas is not installed (pip install 'aebench[tracking]')")
    uri = sqlite_uri(tmp_path)
    switches = {"torch": {"precision.switch.torch.float32_matmul_precision": "highest"}}
    switches["jax"] = {"precision.switch.jax_default_matmul_precision": "highest"}  # each framework's own
    for backend, loss in (("torch", 1.0), ("jax", 2.0)):
        run = small_record(tmp_path / backend, backend, loss)
        run.params.update(switches[backend])
        assert record(run, tmp_path / "bundles" / backend, uri).logged
    comparison = compare(uri)
    assert comparison.warnings == [] and "settings that differ" not in comparison.text
    assert "largest_diff" in comparison.text


def test_many_differing_settings_are_capped_and_missing_ones_shown() -> None:
    pd = pytest.importorskip("pandas", reason="pandas is not installed (pip install 'aebench[tracking]')")
    from aebench.track.compare import MAX_WARNINGS, differing_settings, setting_warnings

    torch_params = {f"model.layer{i:02d}": "64" for i in range(30)} | {"train.epochs": "5", "note": ""}
    runs = pd.DataFrame(
        [
            {"spec": "ae", "backend": "torch", "mode": "train", "dtype": "float32", "start_time": 1,
             "params": torch_params},
            {"spec": "ae", "backend": "jax", "mode": "train", "dtype": "float32", "start_time": 2,
             "params": {f"model.layer{i:02d}": "32" for i in range(30)} | {"note": "x" * 500}},
        ]
    )  # fmt: skip
    settings = differing_settings(runs)
    assert len(settings) == 32
    assert settings.loc[("ae", "train", "float32", "train.epochs")].to_dict() == {"jax": "(unset)", "torch": "5"}
    assert settings.loc[("ae", "train", "float32", "note")].to_dict() == {"jax": "x" * 57 + "...", "torch": "(empty)"}
    warnings = setting_warnings(settings)
    assert len(warnings) == MAX_WARNINGS and warnings[-1] == "13 more settings differ (see the table of settings)"
