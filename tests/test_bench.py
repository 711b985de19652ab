"""Benchmark campaigns: honest figures, isolated cells, resuming, failures recorded.

Cells run in fresh processes (as in a campaign) with a short protocol; the figures they
report are checked for what they claim, not for speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from cases import bench_command, cheap_backend, switches_of  # tests/ is on sys.path (pytest prepend import mode)
from test_cli import aebench

from aebench.bench.campaign import CampaignConfig, load_campaign, plan_cells, run_campaign
from aebench.bench.cell import Cell, run_cell
from aebench.bench.executor import LocalExecutor
from aebench.bench.flops import layer_macs, training_step_flops
from aebench.bench.peak import cache_path, peak_key
from aebench.bench.timing import Protocol, measure
from aebench.check.tolerances import TRAJECTORY_LOSS_RTOL
from aebench.errors import AebenchError, SpecError
from aebench.plugins.bench_api import MODE_NAMES, Precision
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import builtin_specs_dir, load_spec
from aebench.spec.shapes import plan_model
from aebench.track.bench_run import switch_params

SHORT = Protocol(warmup_seconds=0.05, min_warmup_calls=2, blocks=3, block_seconds=0.05, max_steps=5000)
VAE_DENSE_FLOPS_PER_EXAMPLE = 4_382_720  # hand count, see test_vae_dense_flops_match_a_hand_count
HONESTY_TOLERANCE = 0.03  # the bound: harness step time within 3% of a bare loop


def test_vae_dense_flops_match_a_hand_count() -> None:
    # encoder 784x512, heads 512x40 twice, decoder 40x512 and 512x784 multiply-adds per example
    macs = 784 * 512 + 2 * 512 * 40 + 40 * 512 + 512 * 784
    forward, kernel_grads, input_grads = 2 * macs, 2 * macs, 2 * (macs - 784 * 512)  # no grad for the data
    assert forward + kernel_grads + input_grads == VAE_DENSE_FLOPS_PER_EXAMPLE
    assert training_step_flops(plan_model(load_spec("vae_dense")), 1024) == 1024 * VAE_DENSE_FLOPS_PER_EXAMPLE


def test_convolution_multiply_adds_by_hand() -> None:
    plan = plan_model(load_spec("vae_conv"))
    conv0 = plan.encoder[0]  # 28x28x1 -> 14x14x32, 3x3 kernel: each output reads 9 inputs of 1 channel
    assert layer_macs(conv0) == 14 * 14 * 32 * 9 * 1
    last = plan.decoder[-1]  # conv_transpose 28x28x32 -> 28x28x1: each input scatters to 9 outputs x 1 filter
    assert layer_macs(last) == 28 * 28 * 32 * 9 * 1


@pytest.mark.parametrize("mode", MODE_NAMES)
def test_every_mode_times_the_checked_training_step(backend_name: str, mode: str, tmp_path: Path) -> None:
    cell = Cell(spec="vae_dense", backend=backend_name, mode=mode, batch_size=64, steps_per_call=4, protocol=SHORT)
    row = LocalExecutor(tmp_path, timeout_s=900).run(cell)
    if row["status"] == "unsupported":
        pytest.skip(f"{backend_name} {mode}: {row['reason']}")
    assert row["status"] == "ok", row.get("reason")
    assert row["verified_steps"] >= 1 and row["verify_max_rel_diff"] <= TRAJECTORY_LOSS_RTOL["float32"]
    assert row["flops_per_step"] == 64 * VAE_DENSE_FLOPS_PER_EXAMPLE
    assert row["samples_per_s"] == pytest.approx(64 / (row["median_step_ms"] / 1e3))
    assert row["gflops_per_s"] == pytest.approx(row["flops_per_step"] / row["median_step_ms"] / 1e6)
    assert 0 < row["peak_fraction"] == pytest.approx(row["gflops_per_s"] / row["device_peak_gflops"])
    assert row["steps_timed"] == row["blocks"] * row["calls_per_block"] * row["steps_per_call"]
    warmup_steps = (1 + row["warmup_calls"]) * row["steps_per_call"]
    assert row["loss_steps"][:warmup_steps] == list(range(1, warmup_steps + 1))  # the warm-up, step by step
    assert row["verified_steps"] == min(10, warmup_steps)  # only consecutive steps are replayed
    moved = row["warmup_blocks"] * row["calls_per_block"] * row["steps_per_call"]  # blocks still getting faster
    assert row["loss_steps"][-1] == warmup_steps + moved + row["steps_timed"]  # then each block's last step
    assert row["stability"] in ("firm", "unstable") and row["ci_low_ms"] <= row["median_step_ms"] <= row["ci_high_ms"]
    assert row["peak_memory_mb"] > 0 and row["versions"] and row["device"]
    ieee = switches_of(backend_name, "ieee-fp32")  # the precision of every cell here, read back twice
    assert json.loads(row["precision_timed"]) == json.loads(row["precision_replay"]) == ieee


def test_a_tf32_cell_reads_tf32_back_at_the_timed_steps_and_the_replay(backend_name: str, tmp_path: Path) -> None:
    """A cell's process runs at the cell's precision, applied once when its backend loads: what
    the framework reports right after the timed steps and after the verification replay is that
    precision's (a Keras build once reset it to IEEE, so a tf32 cell replayed in IEEE float32).
    ieee-fp32 is read back by every cell of test_every_mode_times_the_checked_training_step.
    The device peak is not under test: the ieee-fp32 one those cells measured stands in for it
    where there is one (a 2048 matmul takes seconds on a CPU)."""
    cache = cache_path()
    peaks = json.loads(cache.read_text()) if cache.is_file() else {}
    for key in [k for k in peaks if k.endswith(f"|{backend_name}|float32|ieee-fp32")]:
        peaks.setdefault(key.replace("|ieee-fp32", "|tf32"), peaks[key])
    if peaks:
        cache.write_text(json.dumps(peaks))
    tf32 = Precision("tf32")
    cell = Cell(spec="vae_toy", backend=backend_name, mode="eager", batch_size=16, precision=tf32, protocol=SHORT)
    row = LocalExecutor(tmp_path, timeout_s=900).run(cell)
    assert row["status"] == "ok", row.get("reason")
    assert row["key"].endswith("|tf32") and row["precision"] == "tf32"
    expected = switches_of(backend_name, "tf32")
    assert json.loads(row["precision_timed"]) == json.loads(row["precision_replay"]) == expected
    params = switch_params(row)  # the MLflow params of the cell's run
    assert {k.removeprefix("precision.replay."): v for k, v in params.items() if "replay" in k} == expected


def test_a_cell_at_another_precision_than_its_process_fails_in_one_line() -> None:
    """Precision is set once per process: this one runs its backends at ieee-fp32, so a tf32
    cell run in it fails, saying why, before anything is measured."""
    name = cheap_backend()
    load_backend(name)  # applied at this process's ieee-fp32
    row = run_cell(Cell(spec="vae_toy", backend=name, mode="eager", batch_size=16, precision=Precision("tf32")))
    assert row["status"] == "failed" and "median_step_ms" not in row
    assert row["reason"].startswith("precision tf32 asked, but this process already runs ")
    assert row["reason"].endswith(" at ieee-fp32: precision is set once per process") and "\n" not in row["reason"]


def test_precision_keeps_its_recorded_names_and_reads_the_older_tf32_forms(tmp_path: Path) -> None:
    """Cell keys, peak-cache keys and campaign names are as they were when the policy was a
    tf32 flag; a cell file and a campaign YAML in the older form are still read."""
    assert (Precision().describe(), Precision("tf32").describe()) == ("ieee-fp32", "tf32")
    assert Precision("tf32").tf32 and not Precision().tf32
    with pytest.raises(AebenchError, match="precision must be one of ieee-fp32, tf32, got 'bf16'"):
        Precision("bf16")  # type: ignore[arg-type]
    cell = Cell(spec="vae_toy", backend="torch", mode="eager", batch_size=16, precision=Precision("tf32"))
    assert cell.key == "vae_toy|torch|eager|16|spec|tf32" and Cell.from_json(cell.to_json()) == cell
    older = json.loads(cell.to_json())
    older["precision"] = {"tf32": True}
    assert Cell.from_json(json.dumps(older)) == cell
    older["precision"] = {"tf32": False}
    assert Cell.from_json(json.dumps(older)).precision == Precision()
    named, flagged, contradicted, bad = (tmp_path / f"{n}.yaml" for n in ("named", "flagged", "contra", "bad"))
    what = "specs: [vae_toy]\nbackends: [torch, jax]\nmodes: [eager]\nbatch_sizes: [16]\n"
    named.write_text(what + "precision: tf32\n")
    flagged.write_text(what + "tf32: true\n")
    contradicted.write_text(what + "tf32: true\nprecision: ieee-fp32\n")
    bad.write_text(what + "precision: fp16\n")
    assert load_campaign(named) == load_campaign(flagged)
    assert load_campaign(named).precision == Precision("tf32")
    assert load_campaign(named).campaign_name() == "vae_toy_torch-jax_eager_b16_tf32"
    specs = tuple(f"spec_number_{i}" for i in range(12))
    long = CampaignConfig(specs=specs, backends=("torch",), precision=Precision("tf32"))
    digest = hashlib.sha256(json.dumps([long.specs, long.backends, long.modes, (), None, True]).encode()).hexdigest()
    assert long.campaign_name().endswith("-" + digest[:8])  # the hash of the tf32 flag, as before
    with pytest.raises(SpecError, match="tf32: true contradicts precision: ieee-fp32"):
        load_campaign(contradicted)
    with pytest.raises(SpecError, match="precision: must be one of ieee-fp32, tf32; got 'fp16'"):
        load_campaign(bad)
    assert peak_key(SimpleNamespace(device=lambda: "cpu", name="torch"), "float32", Precision("tf32")) == (
        "cpu|torch|float32|tf32"
    )


HONESTY_PROBE = textwrap.dedent("""
    import importlib, json, statistics, sys, time
    from aebench.plugins.bench_api import Precision
    from aebench.bench.data import make_bench_data
    from aebench.data.datasets import load_dataset
    from aebench.plugins.registry import load_backend, plugin
    from aebench.spec.load import load_spec
    from aebench.bench.timing import Protocol, measure

    name = sys.argv[1]
    backend = load_backend(name)
    bench = plugin(name).bench()
    spec = load_spec("vae_dense")
    data = make_bench_data(spec, load_dataset(spec), 256, 100_000)
    runner = bench.prepare(backend, spec, "compiled", data, Precision(), 1)
    protocol = Protocol(  # one block per measurement, never extra ones: the bias of measure() is under test
        warmup_seconds=0.2, min_warmup_calls=1, blocks=1, block_seconds=0.5, max_steps=30_000, max_blocks_factor=1
    )
    measure(runner, protocol)  # compiles

    def bare_loop(calls):
        start = time.perf_counter()
        for _ in range(calls):
            handle = runner.dispatch()
        runner.wait(handle)
        return (time.perf_counter() - start) / calls

    harness, bare = [], []
    for i in range(7):  # in turn, first one then the other first: drift and order hit both alike
        if i % 2:
            bare.append(bare_loop(calls))  # calls: from the measurement before
        timing = measure(runner, protocol)
        calls = timing.calls_per_block
        harness.append(timing.median_step_seconds)
        if not i % 2:
            bare.append(bare_loop(calls))
    def spread(times):  # interquartile range over the median
        q1, middle, q3 = statistics.quantiles(times, n=4)
        return (q3 - q1) / middle

    print(json.dumps({
        "harness": statistics.median(harness), "bare": statistics.median(bare),
        "harness_spread": spread(harness), "bare_spread": spread(bare),
    }))
""")


def test_harness_step_time_is_a_bare_loops() -> None:
    """measure() reports the step time of a bare loop of the same compiled step in the same
    process: medians of 7 half-second measurements and 7 bare loops, taken in turn. Within 3%,
    or within the sum of the two sets' own spreads (each one's interquartile range over its
    median) where that is wider: the difference of two medians cannot resolve less than the
    two sets disagree among themselves. On this project's quiet 2-core machine, with 11
    one-second measurements, the harness was within 0.9% (torch) and 0.8% (keras-jax) of the
    bare loops while the loops' own spread was 10% and 8.5%: a fixed 3% failed there 2 times
    in 5 backends. With only the bare loops' spread as the bound, a CI run failed jax at 6.7%
    against a 3.7% spread: the harness's own half-second medians are as noisy as the loops'.
    A dishonest protocol (timing dispatch without a sync, miscounted steps) misses by a
    factor, far more than either bound. measure() is the same code for every backend and the
    bare loop uses the backend's own dispatch and wait, so one backend proves it: jax, whose
    dispatch returns before the step has run (torch where jax is missing); every backend's
    runner is a real cell in test_every_mode_times_the_checked_training_step."""
    backend_name = next((b for b in ("jax", "torch") if b in available_backends()), None)
    if backend_name is None:
        pytest.skip("neither jax nor torch is available")
    out = subprocess.run(
        [sys.executable, "-c", HONESTY_PROBE, backend_name], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-2000:]
    times = json.loads(out.stdout.strip().splitlines()[-1])
    bound = max(HONESTY_TOLERANCE, times["bare_spread"] + times["harness_spread"])
    assert abs(times["harness"] - times["bare"]) / times["bare"] <= bound, times


class SlowFirstCall:
    """A real runner whose first dispatch also sleeps: a stand-in for a long compilation."""

    def __init__(self, runner, seconds: float):
        self.runner, self.seconds, self.calls = runner, seconds, 0
        self.steps_per_call = runner.steps_per_call

    def dispatch(self):
        self.calls += 1
        if self.calls == 1:
            time.sleep(self.seconds)
        return self.runner.dispatch()

    def __getattr__(self, name):
        return getattr(self.runner, name)


def test_first_call_is_kept_out_of_the_steady_state() -> None:

    from aebench.bench.data import make_bench_data
    from aebench.data.datasets import load_dataset
    from aebench.plugins.bench_api import Precision
    from aebench.plugins.registry import load_backend, plugin

    name = cheap_backend()
    spec = load_spec("vae_toy")
    bench = plugin(name).bench()
    runner = bench.prepare(
        load_backend(name), spec, "eager", make_bench_data(spec, load_dataset(spec), 32, 5000), Precision(), 1
    )
    timing = measure(SlowFirstCall(runner, 1.0), SHORT)
    assert timing.first_call_seconds >= 1.0
    assert max(timing.block_step_seconds) < 0.1  # a 1 s first call in any block would show
    assert timing.first_call_overhead_seconds == pytest.approx(timing.first_call_seconds - timing.median_step_seconds)


def write_spec(folder: Path, name: str, learning_rate: str) -> str:
    path = folder / f"{name}.yaml"
    path.write_text(f"extends: {builtin_specs_dir() / 'vae_toy.yaml'}\noptimizer: {{learning_rate: {learning_rate}}}\n")
    return str(path)


def test_failed_cells_are_recorded_and_the_campaign_goes_on(tmp_path: Path) -> None:
    specs = ("vae_toy", write_spec(tmp_path, "nan_lr", ".nan"), write_spec(tmp_path, "huge_lr", "1.0e+30"))
    config = CampaignConfig(
        specs=specs,
        backends=(cheap_backend(),),
        modes=("eager",),
        batch_sizes=(32, 10**12),
        name="failures",
        protocol=SHORT,
    )
    store = run_campaign(config, tmp_path / "results")
    table = store.table()
    table["spec"] = table["spec"].str.split("-").str[0]  # a spec given as a path is keyed stem-hash
    table = table.set_index(["spec", "batch_size"])
    assert len(table) == 6
    assert table.loc[("vae_toy", 32), "status"] == "ok"
    assert table.loc[("vae_toy", 10**12), "reason"].startswith("out of memory: batch size 1000000000000")
    for batch in (32, 10**12):
        assert "optimizer.learning_rate: must be a finite number" in table.loc[("nan_lr", batch), "reason"]
    assert table.loc[("huge_lr", 32), "reason"].startswith("non-finite loss")
    assert (table.drop(index=("vae_toy", 32))["status"] == "failed").all()


def test_a_cell_that_runs_too_long_is_killed_and_recorded(tmp_path: Path) -> None:
    cell = Cell(spec="vae_toy", backend=cheap_backend(), mode="eager", batch_size=32, protocol=SHORT)
    row = LocalExecutor(tmp_path, timeout_s=0.5).run(cell)
    assert (row["status"], row["reason"]) == ("failed", "timed out after 0.5 s")


def test_a_killed_campaign_resumes_with_only_the_missing_cells(tmp_path: Path) -> None:
    flags = ["--warmup-seconds", "0.05", "--blocks", "3", "--block-seconds", "0.05", "--no-mlflow"]
    command = bench_command(tmp_path, "resume", *flags, batch="16,32,64")
    table = tmp_path / "resume" / "cells.csv"
    first = subprocess.Popen(command, start_new_session=True, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (table.is_file() and len(pd.read_csv(table)) >= 1):
        assert first.poll() is None and time.monotonic() < deadline, "the first cell never finished"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    before = pd.read_csv(table)
    assert len(before) < 3
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-2000:]
    after = pd.read_csv(table)
    assert sorted(after["key"]) == sorted(c.key for c in plan_cells(ResumeConfig(cheap_backend())))
    assert after["key"].is_unique  # nothing measured twice
    # the first rows are untouched (a column empty in them all reads as float there, as text beside later rows)
    pd.testing.assert_frame_equal(after.iloc[: len(before)], before, check_dtype=False)
    assert (tmp_path / "resume" / "report.md").is_file() and (tmp_path / "resume" / "report.html").is_file()


def ResumeConfig(backend: str) -> CampaignConfig:
    return CampaignConfig(specs=("vae_toy",), backends=(backend,), modes=("eager",), batch_sizes=(16, 32, 64))


@pytest.mark.parametrize(
    "text, message",
    [
        ("specs: [vae_toy]\nbackends: [torhc]\n", "backends[0]: no backend 'torhc' (did you mean 'torch'?)"),
        ("specs: [vae_tyo]\nbackends: [torch]\n", "specs[0]:"),
        ("specs: [vae_toy]\nbackends: [torch]\nmodes: [jit]\n", "modes[0]: must be one of eager, compiled, fast"),
        ("specs: [vae_toy]\nbackends: [torch]\nbatch_sizes: [0]\n", "batch_sizes[0]: must be >= 1"),
        ("specs: [vae_toy]\nbackends: [torch]\nblocks: 3\n", "blocks: unknown key"),
        ("specs: [vae_toy]\nbackends: [torch]\nprotocol: {blocks: 0}\n", "protocol.blocks: must be >= 1, got 0"),
        ("specs: [vae_toy]\nbackends: [torch]\nprotocol: {block_seconds: 0}\n", "protocol.block_seconds: must be > 0"),
    ],
)
def test_campaign_files_are_checked_up_front(text: str, message: str, tmp_path: Path) -> None:
    bad = tmp_path / "campaign.yaml"
    bad.write_text(text)
    out = aebench("bench", "--campaign", str(bad))
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert str(bad) in out.stderr and message in out.stderr, out.stderr


def test_cells_are_logged_to_mlflow_with_their_figures(tmp_path: Path) -> None:
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed")
    from aebench.track.bench_run import CellTracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = CampaignConfig(
        specs=("vae_toy",),
        backends=(cheap_backend(),),
        modes=("eager",),
        batch_sizes=(32,),
        name="tracked",
        protocol=SHORT,
    )
    store = run_campaign(config, tmp_path / "results", tracker=CellTracker(uri=uri))
    row = store.record(store.table()["key"][0])
    client = mlflow.tracking.MlflowClient(uri)
    experiment = client.get_experiment_by_name("aebench-bench/tracked")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.data.tags["spec"] == "vae_toy" and run.data.tags["mode"] == "eager"
    assert run.data.params["batch_size"] == "32" and run.data.params["model.latent.size"] == "2"
    assert run.data.metrics["time/samples_per_second"] == pytest.approx(row["samples_per_s"])
    curve = client.get_metric_history(run.info.run_id, "train/total")
    assert sorted((m.step, m.value) for m in curve) == [tuple(p) for p in zip(row["loss_steps"], row["losses"])]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"cell.json", "environment.json"}


def test_a_bench_pool_holds_each_batchs_own_term_draws_and_replays_them() -> None:
    """A loss term's draws are per batch (50 directions are not 50 x B rows): the pool draws them
    batch by batch, and step k of the bench sees batch k's, as the replay on the trainer does."""
    import numpy as np

    from aebench.bench.cell import bench_steps
    from aebench.bench.data import make_bench_data
    from aebench.data.datasets import load_dataset
    from aebench.losses.base import draw_key

    spec = load_spec("swae")
    data = make_bench_data(spec, load_dataset(spec), batch_size=16, max_steps=4)
    directions, prior = (data.draws[draw_key("sliced_wasserstein", k)] for k in ("projections", "prior"))
    pool = len(data.order)
    assert directions.shape == (pool, 50, 8) and prior.shape == (pool, 16, 8)
    assert not np.array_equal(directions[0], directions[1])
    np.testing.assert_allclose(np.linalg.norm(directions, axis=2), 1.0, rtol=1e-6)
    step = bench_steps(data, 3)[2]
    np.testing.assert_array_equal(step.noise.draws[draw_key("sliced_wasserstein", "projections")], directions[2])
