"""MLflow tracking: bundles, idempotent logging, a real ``mlflow server``, outages, compare."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cases import suite_spec, switches_of, train_and_track

from aebench.data.datasets import Dataset, load_dataset
from aebench.environment import spec_sha256
from aebench.errors import AebenchError
from aebench.track.bundle import RunRecord, find_bundles, read_bundle, write_bundle
from aebench.track.tracking import BUNDLE_ID_TAG, flatten, log_bundle, record
from aebench.track.train_run import TrackingOptions
from aebench.train.quality import QualitySettings

SERVER_START_TIMEOUT_S = 240
FIGURES = {"reconstructions.png", "samples.png", "interpolation.png", "latent_scatter.png", "loss_curves.png"}


# ---------------------------------------------------------------- helpers


def needs_mlflow():
    return pytest.importorskip("mlflow", reason="MLflow is not installed (pip install 'aebench[tracking]')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real ``mlflow server`` on 127.0.0.1: SQLite store and a proxied artifact root in ``root``."""

    def __init__(self, root: Path):
        self.root, self.port = root, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        log = open(self.root / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root}/mlflow.db",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"mlflow server did not answer in {SERVER_START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Kill the server and its workers at once, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)


@contextmanager
def running_server(root: Path) -> Iterator[Server]:
    server = Server(root)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    needs_mlflow()
    with running_server(tmp_path_factory.mktemp("mlflow_server")) as started:
        yield started


def tiny(spec_name: str, epochs: int = 1, n_train: int = 256, n_test: int = 64):
    """The spec for ``epochs`` epochs on the first n_train/n_test examples of its data."""
    spec = suite_spec(spec_name)
    spec = spec.replace(train=dataclasses.replace(spec.train, epochs=epochs))
    data = load_dataset(spec)
    data = Dataset(
        data.x_train[:n_train], data.y_train[:n_train], data.x_test[:n_test], data.y_test[:n_test], data.source
    )
    return spec, data


QUICK = QualitySettings(k=8, nll_examples=16)


def small_record(tmp_path: Path, backend: str = "torch", loss: float = 1.0) -> RunRecord:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "spec.yaml").write_text(f"name: demo\nbackend: {backend}\n")
    run = RunRecord(
        experiment="aebench/demo",
        run_name=f"demo-{backend}-train",
        params={"model.latent.size": "2", "backend": backend},
        tags={"spec": "demo", "backend": backend, "mode": "train", "dtype": "float32"},
        artifacts={"spec.yaml": tmp_path / "spec.yaml"},
    )
    for step in range(3):
        run.add_metrics(
            {"train/total": loss / (step + 1), "quality/psnr": 10.0 * loss + step}, step=step, timestamp=1_000 + step
        )
    return run


def history(client, run_id: str, key: str) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path or None):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def runs_of_bundle(client, experiment: str, bundle_id: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], filter_string=f"tags.`{BUNDLE_ID_TAG}` = '{bundle_id}'")


# ---------------------------------------------------------------- bundles


def test_flatten_gives_dotted_keys() -> None:
    flat = flatten(
        {
            "model": {
                "encoder": [{"units": 3, "activation": {"name": "leaky_relu", "negative_slope": 0.3}}],
                "shape": [7, 7, 64],
                "conditioning": None,
            }
        }
    )
    assert flat == {
        "model.encoder.0.units": "3",
        "model.encoder.0.activation.name": "leaky_relu",
        "model.encoder.0.activation.negative_slope": "0.3",
        "model.shape": "[7, 7, 64]",
    }


def test_a_bundle_reads_back_as_written(tmp_path: Path) -> None:
    run = small_record(tmp_path)
    run.add_metrics({"test/total": math.nan}, step=3)
    bundle = read_bundle(write_bundle(run, tmp_path / "bundle"))
    assert bundle.record.params == run.params and bundle.record.tags == run.tags
    assert bundle.record.metrics[:-1] == run.metrics[:-1] and math.isnan(bundle.record.metrics[-1].value)
    assert (tmp_path / "bundle" / "artifacts" / "spec.yaml").read_text() == "name: demo\nbackend: torch\n"
    assert read_bundle(tmp_path / "bundle").digest == bundle.digest
    run.add_metrics({"train/total": 0.1}, step=4)
    assert read_bundle(write_bundle(run, tmp_path / "bundle")).digest != bundle.digest
    assert find_bundles(tmp_path) == [tmp_path / "bundle"]


def test_run_files_below_a_folder_that_are_not_bundles_are_named_not_skipped_silently(tmp_path: Path) -> None:
    write_bundle(small_record(tmp_path), tmp_path / "good")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "run.json").write_text('{"format": 99}')
    (tmp_path / "deep").mkdir()
    (tmp_path / "deep" / "run.json").write_text("[" * 100_000 + "]" * 100_000)
    named: list[str] = []
    assert find_bundles(tmp_path, named.append) == [tmp_path / "good"]
    assert [line.split(": passed over, ")[0] for line in named] == [
        str(tmp_path / "deep" / "run.json"),
        str(tmp_path / "other" / "run.json"),
    ]
    assert named[0].split(": passed over, ")[1].startswith("unreadable")
    assert named[1].endswith("not a run bundle of format 1")


def test_a_folder_that_is_not_a_bundle_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(AebenchError, match="not a run bundle"):
        read_bundle(tmp_path)
    with pytest.raises(AebenchError, match="holds no run bundle"):
        find_bundles(tmp_path)
    write_bundle(small_record(tmp_path), tmp_path / "b")
    (tmp_path / "b" / "artifacts" / "spec.yaml").unlink()
    with pytest.raises(AebenchError, match=r"artifacts: spec.yaml is listed but .* is missing"):
        read_bundle(tmp_path / "b")


# ---------------------------------------------------------------- logging, embedded store


def test_logging_twice_makes_one_run(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = small_record(tmp_path)
    first = record(run, tmp_path / "bundle", uri)
    assert first.status == "logged", first.reason
    assert log_bundle(tmp_path / "bundle", uri).status == "skipped"
    client = mlflow.MlflowClient(uri)
    (found,) = runs_of_bundle(client, "aebench/demo", run.bundle_id)
    assert found.info.run_id == first.run_id and found.info.status == "FINISHED"
    assert found.data.params == run.params
    assert history(client, first.run_id, "train/total") == [(0, 1.0, 1000), (1, 0.5, 1001), (2, 1 / 3, 1002)]
    assert artifact_paths(client, first.run_id) == {"spec.yaml"}
    assert json.loads((tmp_path / "bundle" / "logged.json").read_text())[uri]["run_id"] == first.run_id


def test_a_cut_off_run_is_completed_not_duplicated(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    from mlflow.entities import Metric

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    run = small_record(tmp_path)
    write_bundle(run, tmp_path / "bundle")
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("aebench/demo")
    cut = client.create_run(experiment_id, run_name=run.run_name, tags={BUNDLE_ID_TAG: run.bundle_id})
    client.log_batch(cut.info.run_id, metrics=[Metric(m.key, m.value, m.timestamp, m.step) for m in run.metrics[:3]])
    outcome = log_bundle(tmp_path / "bundle", uri)
    assert (outcome.status, outcome.run_id) == ("completed", cut.info.run_id)
    assert len(runs_of_bundle(client, "aebench/demo", run.bundle_id)) == 1
    for key in ("train/total", "quality/psnr"):
        assert history(client, cut.info.run_id, key) == sorted(
            (m.step, m.value, m.timestamp) for m in run.metrics if m.key == key
        )
    assert client.get_run(cut.info.run_id).info.status == "FINISHED"
    assert artifact_paths(client, cut.info.run_id) == {"spec.yaml"}


def test_without_mlflow_the_bundle_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    outcome = record(small_record(tmp_path), tmp_path / "bundle", f"sqlite:///{tmp_path}/mlflow.db")
    assert outcome.status == "kept" and "MLflow is not installed" in outcome.reason
    assert f"aebench log {tmp_path / 'bundle'}" in outcome.message()
    assert not (tmp_path / "mlflow.db").exists() and (tmp_path / "bundle" / "run.json").is_file()


def test_a_server_that_does_not_answer_costs_seconds(tmp_path: Path) -> None:
    start = time.monotonic()
    outcome = record(small_record(tmp_path), tmp_path / "bundle", f"http://127.0.0.1:{free_port()}")
    assert outcome.status == "kept" and "does not answer" in outcome.reason
    assert time.monotonic() - start < 10


# ---------------------------------------------------------------- a real mlflow server


def test_training_logs_params_metrics_and_artifacts_to_a_server(backend, server: Server, tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    spec, data = tiny("vae_conv")
    rows, outcome = train_and_track(spec, backend, data, tmp_path, TrackingOptions(server.uri, quality=QUICK))
    assert outcome.status == "logged", outcome.reason
    client = mlflow.MlflowClient(server.uri)
    run = client.get_run(outcome.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "aebench/vae_conv"
    assert run.info.status == "FINISHED" and run.info.run_name == f"vae_conv-{backend.name}-train"
    params, tags = run.data.params, run.data.tags
    assert {k: params[k] for k in ("model.latent.size", "backend", "mode", "dtype", "precision", "train.epochs")} == {
        "model.latent.size": "2",
        "backend": backend.name,
        "mode": "train",
        "dtype": "float32",
        "precision": "ieee-fp32",
        "train.epochs": "1",
    }
    read = {k.removeprefix("precision.switch."): v for k, v in params.items() if k.startswith("precision.switch.")}
    assert params["precision.tf32"] == "false" and read == switches_of(backend.name, "ieee-fp32")  # read back
    assert (tags["spec"], tags["backend"], tags["mode"]) == ("vae_conv", backend.name, "train")
    assert tags["spec_sha256"] == spec_sha256(spec) and tags["driver"] and tags["git_commit"] and tags["device"]
    assert any(key.startswith("version.") for key in tags) and tags["framework"]
    for key in ("test/total", "test/reconstruction", "test/kl"):
        assert [step for step, _, _ in history(client, outcome.run_id, key)] == [0, 1], key
    for key in (
        "train/total",
        "train/reconstruction",
        "train/kl",
        "time/epoch_seconds",
        "time/train_seconds",
        "quality/nll_is",
        "quality/neg_elbo",
        "quality/recon_sse",
        "quality/recon_term",
    ):
        assert [step for step, _, _ in history(client, outcome.run_id, key)] == [1], key
    assert run.data.metrics["test/total"] == pytest.approx(rows[-1]["test_total"])
    assert artifact_paths(client, outcome.run_id) >= {f"figures/{name}" for name in FIGURES} | {
        "spec.yaml",
        "environment.json",
        "metrics/metrics.csv",
        "metrics/quality.json",
    }
    spec_copy = mlflow.artifacts.download_artifacts(
        run_id=outcome.run_id, artifact_path="spec.yaml", tracking_uri=server.uri, dst_path=str(tmp_path / "download")
    )
    assert Path(spec_copy).read_text() == (tmp_path / "spec.yaml").read_text()


def test_a_server_that_dies_mid_run_loses_nothing(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    from aebench.plugins.registry import available_backends, load_backend

    if not available_backends():
        pytest.skip("no backend is available")
    backend = load_backend(available_backends()[0])
    spec, data = tiny("denoising_vae", epochs=2)

    with running_server(tmp_path / "server") as server:

        def crash_after_first_epoch(row: dict) -> None:
            if row["epoch"] == 1:
                server.stop()

        rows, outcome = train_and_track(
            spec,
            backend,
            data,
            tmp_path / "run",
            TrackingOptions(server.uri, quality=QUICK),
            after_epoch=crash_after_first_epoch,
        )
        assert outcome.status == "kept" and "does not answer" in outcome.reason
        bundle = read_bundle(tmp_path / "run" / "mlflow_bundle")
        keys = {(m.key, m.step) for m in bundle.record.metrics}
        assert {
            ("train/total", 1),
            ("train/total", 2),
            ("test/total", 0),
            ("test/total", 2),
            ("quality/psnr", 2),
            ("quality/nll_is", 2),
        } <= keys
        assert bundle.record.status == "FINISHED"
        assert {"figures/denoising.png", "figures/interpolation.png", "spec.yaml"} <= set(bundle.record.artifacts)

        server.start()  # the same store, back up
        first = log_bundle(bundle.path, server.uri)
        assert first.status == "logged", first.reason
        assert log_bundle(bundle.path, server.uri).status == "skipped"
        client = mlflow.MlflowClient(server.uri)
        (run,) = runs_of_bundle(client, "aebench/denoising_vae", bundle.record.bundle_id)
        logged = {(key, step) for key in run.data.metrics for step, _, _ in history(client, run.info.run_id, key)}
        assert logged == keys
        assert artifact_paths(client, run.info.run_id) == set(bundle.record.artifacts)
        assert run.data.metrics["test/total"] == pytest.approx(rows[-1]["test_total"])


# ---------------------------------------------------------------- compare and the CLI


def aebench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.run(
        [sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, cwd=cwd, env=env
    )


def test_log_and_compare_from_the_command_line(tmp_path: Path) -> None:
    needs_mlflow()
    pytest.importorskip("pandas", reason="pandas is not installed (pip install 'aebench[tracking]')")
    for backend, loss in (("torch", 1.0), ("jax", 2.0)):
        write_bundle(small_record(tmp_path / backend, backend, loss), tmp_path / "bundles" / backend)
    proc = aebench("log", "bundles", cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.count("logged MLflow run") == 2, proc.stdout + proc.stderr
    proc = aebench("log", "bundles/torch", cwd=tmp_path)
    assert proc.returncode == 0 and "already logged" in proc.stdout, proc.stdout + proc.stderr
    proc = aebench("compare", "--csv", "table.csv", "--markdown", "table.md", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "jax" in proc.stdout and "torch/best" in proc.stdout
    psnr = next(line.split() for line in proc.stdout.splitlines() if "quality/psnr" in line)
    # jax, torch, jax/best, torch/best (higher is better), largest_diff, largest_diff_%
    assert psnr[-6:] == ["22", "12", "1.000", "1.833", "10", "83.3%"]
    total = next(line.split() for line in proc.stdout.splitlines() if "train/total" in line)
    assert total[-6:] == ["0.6667", "0.3333", "2.000", "1.000", "0.3333", "100.0%"]  # lower is better
    assert (tmp_path / "table.csv").read_text().startswith("kind,spec,mode,dtype,metric,jax,torch")
    markdown = (tmp_path / "table.md").read_text()
    assert markdown.startswith("## training runs (aebench train): 2 run(s)")
    assert "| spec | mode | dtype | metric | jax | torch |" in markdown


def test_log_and_compare_errors_are_one_line(tmp_path: Path) -> None:
    needs_mlflow()
    proc = aebench("log", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "holds no run bundle" in proc.stderr
    proc = aebench("compare", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no MLflow store at mlflow.db" in proc.stderr
    assert record(small_record(tmp_path), tmp_path / "bundle", f"sqlite:///{tmp_path}/mlflow.db").logged
    proc = aebench("compare", "--experiment", "nope", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no experiment 'nope'" in proc.stderr
    assert "there are: Default, aebench/demo" in proc.stderr


def test_train_without_mlflow_writes_the_bundle_only(tmp_path: Path) -> None:
    proc = aebench(
        "train",
        "vae_toy",
        "--epochs",
        "1",
        "--out",
        "run",
        "--no-mlflow",
        "--nll-k",
        "4",
        "--nll-examples",
        "8",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "aebench log run/mlflow_bundle" in proc.stderr and not (tmp_path / "mlflow.db").exists()
    run = read_bundle(tmp_path / "run" / "mlflow_bundle").record
    assert run.params["quality.nll_k"] == "4" and run.params["quality.nll_examples"] == "8"
    assert {m.key for m in run.metrics} >= {"quality/nll_is", "quality/neg_elbo", "test/total", "train/total"}
