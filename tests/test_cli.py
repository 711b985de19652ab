"""The installed ``aebench`` command, run as a user runs it, and the plugin registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cases import cheap_backend, switches_of  # tests/ is on sys.path (pytest prepend import mode)

from aebench.cli.main import build_parser
from aebench.plugins.registry import list_backends
from aebench.spec.load import list_specs

REPO = Path(__file__).resolve().parents[1]


def aebench(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aebench.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )


def test_list_shows_every_spec_and_backend() -> None:
    proc = aebench("list")
    assert proc.returncode == 0, proc.stderr
    for name in list_specs():
        assert f"  {name} " in proc.stdout
    for info in list_backends():
        assert info.name in proc.stdout


def test_validate_accepts_every_shipped_spec() -> None:
    proc = aebench("validate", *sorted(str(p) for p in (REPO / "specs").glob("*.yaml")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("ok: ") == len(list_specs())


def test_train_writes_metrics_pngs_and_an_mlflow_run(backend_name: str, tmp_path: Path) -> None:
    """`aebench train` of the tiny vae_toy for one epoch on every backend, logged to a real
    sqlite store (5 to 20 s each on a 2-core CPU, mostly the framework's import). An epoch of
    every spec on every backend, in process: tests/test_training.py."""
    out = tmp_path / "run"
    proc = aebench("train", "vae_toy", "--backend", backend_name, "--epochs", "1", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert {"metrics.csv", "metrics.json", "reconstructions.png", "samples.png", "spec.yaml", "mlflow_bundle"} <= {
        p.name for p in out.iterdir()
    }
    assert "epoch 1: train total" in proc.stderr and "logged MLflow run" in proc.stderr
    assert "Traceback" not in proc.stderr
    header, *epochs = (out / "metrics.csv").read_text().splitlines()
    assert len(epochs) == 2  # epoch 0 (before training) and epoch 1
    assert header.split(",") == [
        "epoch",
        "seconds",
        "train_total",
        "train_reconstruction",
        "train_kl",
        "test_total",
        "test_reconstruction",
        "test_kl",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "vae_dense", "--backend", "troch"], "no backend 'troch' (did you mean 'torch'?)"),
        (["train", "vae_dnse"], "no such spec file or shipped spec (did you mean 'vae_dense'?)"),
        (["train", "vae_dense", "--data", "/nonexistent/mnist.npz"], "--data: no MNIST file at /nonexistent/mnist.npz"),
        (["train", "vae_dense", "--epochs", "0"], "--epochs: must be a whole number >= 1, got 0"),
        (["train", "vae_toy", "--data", "/tmp/mnist.npz"], "--data: vae_toy trains on height_weight data"),
    ],
)
def test_bad_command_lines_give_one_error_line(args: list[str], message: str) -> None:
    proc = aebench(*args)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].count(message) == 1


@pytest.mark.parametrize("command", [["train", "vae_toy"], ["check"], ["bench"]])
def test_train_check_and_bench_take_a_precision(command: list[str], capsys: pytest.CaptureFixture) -> None:
    """--precision NAME, or --tf32 for tf32; neither: the process's default (ieee-fp32). A bad
    name, or both flags, is argparse's one error line and exit 2."""
    parser = build_parser()
    assert parser.parse_args([*command, "--precision", "tf32"]).precision == "tf32"
    assert parser.parse_args([*command, "--precision", "ieee-fp32"]).precision == "ieee-fp32"
    assert parser.parse_args([*command, "--tf32"]).precision == "tf32"
    assert parser.parse_args(command).precision is None
    for bad, message in (
        (["--precision", "bf16"], "argument --precision: invalid choice: 'bf16'"),
        (["--precision", "ieee-fp32", "--tf32"], "argument --tf32: not allowed with argument --precision"),
    ):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args([*command, *bad])
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and error.count("\n") == 1 and message in error, error


def test_train_records_the_precision_its_framework_reads_back(tmp_path: Path) -> None:
    """`aebench train --precision tf32`: the run's params hold tf32 and each switch as the
    framework reports it once the precision is applied (no longer a hardcoded 'false')."""
    out, backend = tmp_path / "run", cheap_backend()
    args = ["train", "vae_toy", "--backend", backend, "--epochs", "1", "--precision", "tf32", "--no-mlflow"]
    proc = aebench(*args, "--nll-examples", "8", "--nll-k", "2", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    params = json.loads((out / "mlflow_bundle" / "run.json").read_text())["params"]
    assert (params["precision"], params["precision.tf32"]) == ("tf32", "true")
    read = {k.removeprefix("precision.switch."): v for k, v in params.items() if k.startswith("precision.switch.")}
    assert read == switches_of(backend, "tf32")


def test_a_plugin_whose_framework_is_missing_is_listed_unavailable(tmp_path: Path) -> None:
    """A real third-party entry point (a dist-info on the path) whose framework cannot import."""
    dist = tmp_path / "ghost_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ghost-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aebench.backends]\nghost = ghost_backend:PLUGIN\n")
    (tmp_path / "ghost_backend.py").write_text(
        textwrap.dedent("""
        from aebench.plugins.plugin import Plugin

        def _load():
            import ghostframework  # not installed anywhere
            return ghostframework

        PLUGIN = Plugin(name="ghost", framework="ghostframework", load=_load, bench=_load, peak=_load,
                        precision=_load, install_hint="pip install ghost")
    """)
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    listed = aebench("list", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "  ghost " in listed.stdout
    assert "not installed: ghostframework not found (pip install ghost)" in listed.stdout
    loaded = aebench("list", "--load", env=env)
    assert loaded.returncode == 0, loaded.stderr
    assert "unavailable: ghostframework cannot be imported" in loaded.stdout
    trained = aebench("train", "vae_toy", "--backend", "ghost", env=env)
    assert trained.returncode == 2
    assert trained.stderr.strip() == (
        "aebench: error: backend 'ghost' is unavailable: ghostframework cannot be "
        "imported: No module named 'ghostframework' (pip install ghost)"
    )


def test_check_prints_a_table_and_passes() -> None:
    proc = aebench("check", "vae_toy", "--backends", "torch", "--dtype", "float64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "checking [1/1] vae_toy float64 torch" in proc.stderr  # progress, even when not on a terminal
    header = proc.stdout.splitlines()[0].split()
    assert header[:5] == ["spec", "backend", "dtype", "quantity", "max"]
    assert "loss terms vs oracle" in proc.stdout and "FAIL" not in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].endswith("0 failed, 0 skipped")


def test_check_json_lists_every_quantity() -> None:
    import json

    proc = aebench("check", "ae", "--backends", "torch", "--dtype", "float32", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["quantity"] for r in rows} >= {"loss:total", "loss:reconstruction", "encode:code", "decode"}
    assert all(r["verdict"] == "pass" and r["error"] <= r["tolerance"] for r in rows)


def test_check_reports_an_uninstalled_backend_as_skipped(tmp_path: Path) -> None:
    dist = tmp_path / "ghost_backend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ghost-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[aebench.backends]\nghost = ghost_backend:PLUGIN\n")
    (tmp_path / "ghost_backend.py").write_text(
        "from aebench.plugins.plugin import Plugin\n"
        "def _load():\n    import ghostframework\n"
        "PLUGIN = Plugin(name='ghost', framework='ghostframework', load=_load, bench=_load, peak=_load,"
        " precision=_load)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = aebench("check", "vae_toy", "--backends", "ghost,torch", "--dtype", "float64", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("*")]
    assert len(skipped) == 1 and "ghost" in skipped[0] and "skip" in skipped[0]
    assert "ghostframework cannot be imported" in skipped[0]


def test_check_names_an_unknown_backend_in_one_line() -> None:
    proc = aebench("check", "vae_toy", "--backends", "torhc")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "aebench: error: --backends: no backend 'torhc' (did you mean 'torch'?)"
    )
