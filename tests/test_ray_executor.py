"""Campaigns through Ray (issue 12) on a real local Ray cluster, started here on 127.0.0.1 with
this machine's CPUs: the same table as the local executor, failures recorded, a killed worker
recorded once, a killed driver resumed, and never two timed cells at once on one device."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

if importlib.util.find_spec("ray") is None:  # not imported here: the executor sets RAY_AUTH_MODE first
    pytest.skip("ray is not installed (pip install 'aebench[ray]')", allow_module_level=True)

from aebench.bench.campaign import CampaignConfig, run_campaign  # noqa: E402
from aebench.bench.ray_executor import RayExecutor, cell_resources  # noqa: E402
from aebench.bench.store import ResultStore  # noqa: E402
from aebench.bench.timing import Protocol  # noqa: E402
from aebench.plugins.registry import available_backends  # noqa: E402
from aebench.spec.load import builtin_specs_dir  # noqa: E402

SHORT = Protocol(warmup_seconds=0.05, min_warmup_calls=1, blocks=2, block_seconds=0.05, max_steps=2000)
SLOW = Protocol(warmup_seconds=0.05, min_warmup_calls=1, blocks=3, block_seconds=4.0, max_steps=200_000)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address() -> Iterator[str]:
    """A Ray head on 127.0.0.1 with this machine's CPUs, stopped after the module's tests."""
    port = free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    start = [str(ray_bin), "start", "--head", f"--port={port}", f"--num-cpus={os.cpu_count()}", "--num-gpus=0"]
    start += ["--include-dashboard=false", "--disable-usage-stats"]
    proc = subprocess.run(start, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield f"127.0.0.1:{port}"
    subprocess.run([str(ray_bin), "stop", "--force"], capture_output=True, timeout=120)


def backend() -> str:
    """One backend for the campaigns here: what they test is the executor, not the framework."""
    found = [b for b in ("torch", "jax") if b in available_backends()]
    if not found:
        pytest.skip("neither torch nor jax is available")
    return found[0]


def nan_spec(folder: Path) -> str:
    path = folder / "nan_lr.yaml"
    path.write_text(f"extends: {builtin_specs_dir() / 'vae_toy.yaml'}\noptimizer: {{learning_rate: .nan}}\n")
    return str(path)


def aebench_bench(*args: str, results: Path, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "aebench.cli", "bench", "--results", str(results), "--no-mlflow", *args]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_cells_ask_for_a_whole_device() -> None:
    assert cell_resources({"GPU": 4.0, "CPU": 64.0}, [32.0, 32.0]) == ({"num_gpus": 1, "num_cpus": 1}, 4)
    assert cell_resources({"CPU": 6.0}, [2.0, 4.0]) == ({"num_cpus": 2.0}, 2)


def test_ray_writes_the_table_of_the_local_executor(ray_address: str, tmp_path: Path) -> None:
    specs = ("vae_toy", nan_spec(tmp_path))
    config = CampaignConfig(
        specs=specs, backends=(backend(),), modes=("eager",), batch_sizes=(16, 32), name="same", protocol=SHORT
    )
    local = run_campaign(config, tmp_path / "local").table()
    remote_store = run_campaign(
        config, tmp_path / "ray", executor=RayExecutor(tmp_path / "ray" / "same" / "logs", 600, ray_address)
    )
    remote = remote_store.table()
    assert len(local) >= 4 and len(remote) == len(local)
    assert sorted(zip(local["key"], local["status"])) == sorted(zip(remote["key"], remote["status"]))
    assert set(remote.loc[remote["spec"].str.startswith("nan_lr-"), "status"]) == {"failed"}  # keyed stem-hash
    assert set(remote.loc[remote["spec"] == "vae_toy", "status"]) == {"ok"}
    records = [remote_store.record(key) for key in remote["key"]]
    assert all(Path(r["log"]).is_file() for r in records if "log" in r)
    assert_no_two_cells_overlap(records)
    assert not sys.modules["ray"].is_initialized()  # left connected, Ray ends this process when the cluster stops


def assert_no_two_cells_overlap(records: list[dict]) -> None:
    """From the recorded process start and end of each cell: one timed cell at a time per host."""
    spans = sorted((r["host"], r["process_started"], r["process_ended"]) for r in records if "host" in r)
    assert spans, "no cell recorded where and when it ran"
    for (host_a, _, end_a), (host_b, start_b, _) in zip(spans, spans[1:]):
        assert host_a != host_b or start_b >= end_a, (host_a, end_a, start_b)


def test_the_command_line_runs_on_ray_and_resumes_after_the_driver_is_killed(ray_address: str, tmp_path: Path) -> None:
    args = ["--specs", "vae_toy", "--backends", backend(), "--modes", "eager", "--batch-sizes", "8,16,32"]
    args += ["--blocks", "2", "--block-seconds", "0.3", "--warmup-seconds", "0.05", "--name", "resume"]
    args += ["--executor", "ray", "--ray-address", ray_address]
    results = tmp_path / "results"
    table_path = results / "resume" / "cells.csv"
    first = aebench_bench(*args, results=results, cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (table_path.is_file() and len(pd.read_csv(table_path)) >= 1):
        time.sleep(0.2)
    first.send_signal(signal.SIGKILL)
    first.wait()
    done_before = set(pd.read_csv(table_path)["key"])
    second = aebench_bench(*args, results=results, cwd=tmp_path)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    table = pd.read_csv(table_path)
    planned = 3
    assert len(table) == table["key"].nunique() == planned, table[["key", "status"]]
    ran_again = [line for line in out.splitlines() if line.startswith("[") and not line.endswith("minute per cell)")]
    assert len(ran_again) == planned - len(done_before), out


def test_a_worker_killed_during_a_cell_is_one_failed_row(ray_address: str, tmp_path: Path) -> None:
    config = CampaignConfig(
        specs=("vae_toy",), backends=(backend(),), modes=("eager",), batch_sizes=(16, 32), name="kill", protocol=SLOW
    )
    folder = tmp_path / "kill"
    killer = subprocess.Popen([sys.executable, "-c", KILL_FIRST_CELL_WORKER])
    try:
        store = run_campaign(config, tmp_path, executor=RayExecutor(folder / "logs", 600, ray_address))
    finally:
        killer.wait(timeout=120)
    table = ResultStore(store.folder).table()
    raw = pd.read_csv(store.table_path)
    assert len(raw) == raw["key"].nunique() == 2
    statuses = sorted(table["status"])
    assert statuses == ["failed", "ok"], table[["key", "status", "reason"]]
    assert "Ray task died" in table.loc[table["status"] == "failed", "reason"].iloc[0]
    assert json.loads((store.folder / "environment.json").read_text())


# Waits for the first cell process, then SIGKILLs the Ray worker that started it.
KILL_FIRST_CELL_WORKER = """
import os, signal, time
deadline = time.monotonic() + 120
while time.monotonic() < deadline:
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f'/proc/{pid}/cmdline', 'rb').read().split(b'\\0')
            stat = open(f'/proc/{pid}/stat').read()
        except OSError:
            continue
        if b'aebench.bench.cell' in cmd:
            time.sleep(2.0)
            os.kill(int(stat.rsplit(')', 1)[1].split()[1]), signal.SIGKILL)
            raise SystemExit(0)
    time.sleep(0.1)
raise SystemExit('no cell process appeared')
"""


def test_without_ray_the_ray_executor_is_one_line(tmp_path: Path) -> None:
    """A machine without ray: the flag is refused in one line, exit 2 (ray hidden by a package
    of the same name that cannot be imported)."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "bench", "--specs", "vae_toy", "--backends", backend()]
        + ["--executor", "ray", "--results", str(tmp_path / "r"), "--no-mlflow"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "ray is not installed (pip install 'aebench[ray]')" in proc.stderr


def test_an_unreachable_ray_address_is_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "bench", "--specs", "vae_toy", "--backends", backend()]
        + ["--executor", "ray", "--ray-address", f"127.0.0.1:{free_port()}", "--results", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "--ray-address: nothing answers at 127.0.0.1" in proc.stderr, proc.stderr
