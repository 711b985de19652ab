"""Like compared with like (issue 17): bench cells and trainings apart, step counts and epochs
warned about, runs that last as long as the cell or training did, experiments of MLflow's
"Machine learning" kind. Records are built directly (no framework runs) except one vae_toy epoch."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cases import cheap_backend, train_and_track
from test_hostile_tracking import sqlite_uri
from test_tracking import QUICK, aebench, needs_mlflow, small_record

from aebench.data.datasets import load_dataset
from aebench.errors import AebenchError
from aebench.spec.load import load_spec
from aebench.track.bench_run import cell_record, cell_times
from aebench.track.compare import compare, fetch_runs
from aebench.track.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, KIND_TAG, LogOutcome, record, runs_table_url
from aebench.track.train_run import TrackingOptions

pytest.importorskip("pandas", reason="pandas is not installed (pip install 'aebench[tracking]')")

CAMPAIGN = "demo-campaign"
STARTED = "2026-11-22T10:00:00+00:00"
STARTED_MS = int(datetime(2026, 11, 22, 10, tzinfo=timezone.utc).timestamp() * 1000)


def cell_row(backend: str, steps_timed: int, loss: float, precision: str = "ieee-fp32", seconds: float = 14.2) -> dict:
    """A measured cell's row as the campaign stores it: vae_toy, compiled, batch 32; a warm-up of
    5 steps, then one loss point per timed block of 10 steps (``steps_timed``: a multiple of 10),
    ending at ``loss``."""
    steps = [*range(1, 6), *range(15, 6 + steps_timed, 10)]
    return {
        "key": f"vae_toy|{backend}|compiled|32|float32|{precision}",
        "spec": "vae_toy",
        "backend": backend,
        "mode": "compiled",
        "batch_size": 32,
        "dtype": "float32",
        "precision": precision,
        "status": "ok",
        "reason": "",
        "started": STARTED,
        "cell_seconds": seconds,
        "steps_timed": steps_timed,
        "median_step_ms": 1.5,
        "samples_per_s": 21000.0,
        "loss_steps": steps,
        "losses": [loss * (len(steps) - i) for i in range(len(steps))],
    }


def log_cell(tmp_path: Path, row: dict) -> LogOutcome:
    run = cell_record(row, row["spec"], CAMPAIGN, {}, {})
    outcome = record(run, tmp_path / "cells" / row["key"].replace("|", "__"), sqlite_uri(tmp_path))
    assert outcome.logged, outcome.reason
    return outcome


def log_training(tmp_path: Path, backend: str, loss: float, epochs: str = "3") -> LogOutcome:
    run = small_record(tmp_path / "train" / backend, backend, loss)
    run.params["train.epochs"] = epochs
    outcome = record(run, tmp_path / "train" / backend / "bundle", sqlite_uri(tmp_path))
    assert outcome.logged, outcome.reason
    return outcome


# ---------------------------------------------------------------- 1: kinds apart


def test_cells_and_trainings_are_tagged_and_compared_apart(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri = sqlite_uri(tmp_path)
    trained = log_training(tmp_path, "torch", 1.0)
    log_training(tmp_path, "jax", 2.0, epochs="1")
    cell = log_cell(tmp_path, cell_row("torch", 30, 0.07))
    log_cell(tmp_path, cell_row("jax", 1930, 0.006))
    client = mlflow.MlflowClient(uri)
    assert client.get_run(trained.run_id).data.tags[KIND_TAG] == "train"
    assert client.get_run(cell.run_id).data.tags[KIND_TAG] == "bench"

    comparison = compare(uri, csv=tmp_path / "table.csv")
    text = comparison.text
    train_part, bench_part = (
        text[text.index("training runs (") : text.index("bench cells (")],
        text[text.index("bench cells (") :],
    )
    assert train_part.startswith("training runs (aebench train): 2 run(s)") and "compiled" not in train_part
    assert bench_part.startswith("bench cells (aebench bench): 2 run(s), the latest per spec, mode, dtype, batch_size")
    assert " train " not in bench_part and "quality/psnr" not in bench_part
    table = tmp_path.joinpath("table.csv").read_text().splitlines()
    assert table[0].startswith("kind,spec,mode,dtype,batch_size,precision,metric,jax,torch")
    assert {line.split(",")[0] for line in table[1:]} == {"train", "bench"}
    assert all(",compiled," in line for line in table[1:] if line.startswith("bench,"))

    assert any("train.epochs" in line for line in comparison.warnings)
    only = compare(uri, kind="bench")
    assert "training runs (" not in only.text and "bench cells (" in only.text
    assert only.warnings and not any("train.epochs" in line for line in only.warnings)


def test_kind_of_runs_logged_before_the_tag_comes_from_the_experiment(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    from mlflow.entities import Metric, Param

    uri = sqlite_uri(tmp_path)
    client = mlflow.MlflowClient(uri)
    for experiment, mode in (("aebench/vae_toy", "train"), ("aebench-bench/old", "eager")):
        experiment_id = client.create_experiment(experiment)
        for backend, last_step in (("torch", 40), ("jax", 1935)):
            run = client.create_run(experiment_id, tags={"spec": "vae_toy", "backend": backend, "mode": mode})
            client.log_batch(
                run.info.run_id,
                metrics=[Metric("train/total", 1.0 / step, 0, step) for step in (1, 2, last_step)],
                params=[Param("batch_size", "32")],
            )
            client.set_terminated(run.info.run_id)
    runs = fetch_runs(uri)
    assert sorted(runs.groupby("kind")["experiment"].first().items()) == [
        ("bench", "aebench-bench/old"),
        ("train", "aebench/vae_toy"),
    ]
    bench = runs[runs["kind"] == "bench"].set_index("backend")["params"]
    assert (bench["jax"]["steps_run"], bench["torch"]["steps_run"]) == ("1935", "40")  # from the loss curve
    assert "steps_run" not in runs[runs["kind"] == "train"]["params"].iloc[0]


def test_kind_asked_for_that_has_no_runs_is_one_line(tmp_path: Path) -> None:
    needs_mlflow()
    log_training(tmp_path, "torch", 1.0)
    with pytest.raises(AebenchError, match=r"^--kind bench: no finished bench cells .*; there are: train \(1\)$"):
        compare(sqlite_uri(tmp_path), kind="bench")
    proc = aebench("compare", "--help", cwd=tmp_path)
    assert "--kind {train,bench}" in proc.stdout and "never put in one row" in " ".join(proc.stdout.split())


# ---------------------------------------------------------------- 2: differing steps and epochs are warned about


def test_cells_with_different_step_counts_are_compared_after_a_warning(tmp_path: Path) -> None:
    needs_mlflow()
    uri = sqlite_uri(tmp_path)
    log_cell(tmp_path, cell_row("torch", 30, 0.07))
    log_cell(tmp_path, cell_row("jax", 1930, 0.006))
    log_cell(tmp_path, cell_row("torch", 30, 0.07, precision="tf32"))
    log_training(tmp_path, "torch", 1.0, epochs="5")
    log_training(tmp_path, "jax", 2.0, epochs="1")
    warnings = compare(uri).warnings
    assert "demo (train, float32): train.epochs differs between the runs compared: jax 1, torch 5" in warnings
    cells = "vae_toy (compiled, float32, batch 32, ieee-fp32)"
    assert f"{cells}: steps_run differs between the runs compared: jax 1935, torch 35" in warnings
    assert f"{cells}: steps_timed differs between the runs compared: jax 1930, torch 30" in warnings
    assert not any("tf32" in line for line in warnings)  # the tf32 cell has no other backend beside it


def test_an_unstable_cell_is_tagged_and_compare_warns_about_it(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    noisy = {**cell_row("torch", 30, 0.07), "block_step_ms": json.dumps([262.8, 190.3, 14.6, 12.1, 62.0, 24.7, 18.4])}
    quiet = {**cell_row("jax", 30, 0.07), "block_step_ms": json.dumps([1.5, 1.51, 1.49, 1.5, 1.5, 1.52, 1.5])}
    outcome = log_cell(tmp_path, noisy)
    log_cell(tmp_path, quiet)
    tags = mlflow.MlflowClient(sqlite_uri(tmp_path)).get_run(outcome.run_id).data.tags
    assert tags["stability"] == "unstable" and "interval" in tags["unstable_reason"]
    warnings = compare(sqlite_uri(tmp_path)).warnings
    unstable = [line for line in warnings if "UNSTABLE" in line]
    assert len(unstable) == 1 and unstable[0].startswith(
        "vae_toy (compiled, float32, batch 32, ieee-fp32): torch's step time is UNSTABLE (interval"
    )


# ---------------------------------------------------------------- 3: a run lasts as long as its cell or training


def test_a_cell_run_starts_and_ends_when_the_cell_did(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    outcome = log_cell(tmp_path, cell_row("torch", 30, 0.07, seconds=86.25))
    info = mlflow.MlflowClient(sqlite_uri(tmp_path)).get_run(outcome.run_id).info
    assert (info.start_time, info.end_time) == (STARTED_MS, STARTED_MS + 86_250)


def test_cell_times_read_a_time_without_zone_as_utc_and_end_a_row_without_one_now() -> None:
    row = {"started": "2026-11-22T10:00:00", "cell_seconds": 1.5}
    assert cell_times(row) == (STARTED_MS, STARTED_MS + 1500)
    before = int(time.time() * 1000)
    start, end = cell_times({"started": "yesterday", "cell_seconds": 2.0})
    assert end - start == 2000 and before <= end <= int(time.time() * 1000)


def test_a_training_run_lasts_as_long_as_the_training(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    from aebench.plugins.registry import load_backend

    spec = load_spec("vae_toy")
    spec = spec.replace(train=dataclasses.replace(spec.train, epochs=1))
    data = load_dataset(spec)  # 1,024 rows of 2 numbers: an epoch takes a fraction of a second
    before = int(time.time() * 1000)
    _, outcome = train_and_track(
        spec,
        load_backend(cheap_backend()),
        data,
        tmp_path / "run",
        TrackingOptions(sqlite_uri(tmp_path), quality=QUICK),
    )
    after = int(time.time() * 1000)
    run = mlflow.MlflowClient(sqlite_uri(tmp_path)).get_run(outcome.run_id)
    assert run.data.tags[KIND_TAG] == "train"
    assert before <= run.info.start_time <= run.info.end_time <= after
    assert run.info.end_time - run.info.start_time >= 1000 * run.data.metrics["time/train_seconds"]


# ---------------------------------------------------------------- 4: experiments of the "Machine learning" kind


def test_experiments_are_of_mlflows_machine_learning_kind(tmp_path: Path) -> None:
    mlflow = needs_mlflow()
    uri = sqlite_uri(tmp_path)
    client = mlflow.MlflowClient(uri)
    earlier = client.create_experiment("aebench/demo")  # made by an aebench before the tag
    chosen = client.create_experiment(f"aebench-bench/{CAMPAIGN}", tags={EXPERIMENT_KIND_TAG: "finetuning"})
    log_training(tmp_path, "torch", 1.0)
    log_cell(tmp_path, cell_row("torch", 30, 0.07))
    small = small_record(tmp_path / "new")
    small.experiment = "aebench/new"
    assert record(small, tmp_path / "new" / "bundle", uri).logged
    kinds = {e.name: e.tags.get(EXPERIMENT_KIND_TAG) for e in client.search_experiments()}
    assert kinds["aebench/demo"] == kinds["aebench/new"] == EXPERIMENT_KIND == "custom_model_development"
    assert kinds[f"aebench-bench/{CAMPAIGN}"] == "finetuning"  # a kind someone chose is kept
    assert client.get_experiment(earlier).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "finetuning"


def test_the_experiment_kind_is_one_mlflows_ui_knows() -> None:
    mlflow = needs_mlflow()
    bundles = list((Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js").glob("main.*.js"))
    if not bundles:
        pytest.skip("this MLflow has no built UI")
    assert f'CUSTOM_MODEL_DEVELOPMENT="{EXPERIMENT_KIND}"' in bundles[0].read_text(errors="replace")


def test_the_runs_table_address_is_given_for_a_server_only() -> None:
    page = runs_table_url("http://user:secret@mlflow.example:5000/", "7")
    assert page == "http://user:***@mlflow.example:5000/#/experiments/7?workflowType=machine_learning"
    assert runs_table_url("sqlite:///mlflow.db", "7") == ""
    outcome = LogOutcome("logged", Path("b"), "http://127.0.0.1:5000", "r1", "7")
    assert outcome.message().endswith(
        "; runs table: http://127.0.0.1:5000/#/experiments/7?workflowType=machine_learning"
    )
