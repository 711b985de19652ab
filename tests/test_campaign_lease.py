"""Campaigns that fit a GPU lease (issue 10, item 6), tested on the CPU: a time budget that
starts no new cell and resumes, shards that split a campaign across machines, and merging
their result folders into one table and report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from aebench.bench.campaign import (
    Budget,
    CampaignConfig,
    Shard,
    cells_left,
    load_campaign,
    plan_cells,
    run_campaign,
)
from aebench.bench.merge import merge_results
from aebench.bench.report import write_report
from aebench.bench.timing import Protocol
from aebench.errors import AebenchError
from aebench.plugins.registry import available_backends

SHORT = Protocol(warmup_seconds=0.05, min_warmup_calls=1, blocks=2, block_seconds=0.05, max_steps=2000)


def cheap_config(name: str, batch_sizes: tuple[int, ...] = (16, 32)) -> CampaignConfig:
    backend = next((b for b in ("torch", "jax") if b in available_backends()), None)
    if backend is None:
        pytest.skip("neither torch nor jax is available")
    return CampaignConfig(
        specs=("vae_toy",), backends=(backend,), modes=("eager",), batch_sizes=batch_sizes, name=name, protocol=SHORT
    )


def test_shards_are_disjoint_and_cover_the_plan() -> None:
    config = CampaignConfig(
        specs=("ae", "vae_dense", "vae_conv"), backends=("torch", "jax"), modes=("eager", "compiled", "fast")
    )
    keys = [cell.key for cell in plan_cells(config)]
    for count in (1, 2, 3, 5):
        parts = [[c.key for c in Shard(i, count).select(plan_cells(config))] for i in range(1, count + 1)]
        assert sorted(k for part in parts for k in part) == sorted(keys)
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0/2", "3/2", "a/b", "2", "1/0"])
def test_a_bad_shard_is_one_line(text: str) -> None:
    with pytest.raises(AebenchError, match="--shard: must be I/N"):
        Shard.parse(text)


def test_a_spent_budget_starts_no_cell_and_the_same_run_resumes(tmp_path: Path) -> None:
    config = cheap_config("budget")
    store = run_campaign(config, tmp_path, budget=Budget(max_seconds=0))
    assert len(store.table()) == 0 and len(cells_left(config, store)) == 2
    store = run_campaign(config, tmp_path, budget=Budget(max_seconds=3600))
    assert sorted(store.table()["status"]) == ["ok", "ok"] and cells_left(config, store) == []


def test_shards_from_two_machines_merge_into_one_table_and_report(tmp_path: Path) -> None:
    config = cheap_config("split")
    first = run_campaign(config, tmp_path / "machine1", shard=Shard(1, 2))
    second = run_campaign(config, tmp_path / "machine2", shard=Shard(2, 2))
    assert len(first.table()) == len(second.table()) == 1
    merged, conflicts = merge_results([first.folder, second.folder], tmp_path / "merged")
    assert conflicts == []
    assert sorted(merged.table()["key"]) == sorted(c.key for c in plan_cells(config))
    assert {p.name for p in (tmp_path / "merged" / "environments").iterdir()} == {"split.json"}
    md, _ = write_report([merged.folder], merged.folder)
    assert "## vae_toy, batch 16" in md.read_text() and "## vae_toy, batch 32" in md.read_text()


def test_a_key_in_two_folders_keeps_the_measured_record(tmp_path: Path) -> None:
    config = cheap_config("twice", batch_sizes=(16,))
    good = run_campaign(config, tmp_path / "a")
    bad = tmp_path / "b" / "twice"
    (bad / "cells").mkdir(parents=True)
    row = good.record(good.table()["key"][0])
    failed = {**row, "status": "failed", "reason": "the machine went away", "started": "9999-01-01T00:00:00+00:00"}
    [record_file] = (good.folder / "cells").iterdir()
    (bad / "cells" / record_file.name).write_text(json.dumps(failed))
    merged, conflicts = merge_results([good.folder, bad], tmp_path / "merged")
    assert [c.key for c in conflicts] == [row["key"]] and conflicts[0].kept == str(good.folder)
    assert merged.table()["status"].tolist() == ["ok"]


def test_bench_refuses_a_bad_shard_in_one_line() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "aebench.cli", "bench", "--specs", "vae_toy", "--shard", "3/2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "--shard: must be I/N" in proc.stderr


GPU_EVIDENCE = Path(__file__).resolve().parents[1] / "results" / "gpu-h100-2026-11-22" / "cells.csv"
GPU_CAMPAIGN = Path(__file__).resolve().parents[1] / "results" / "campaigns" / "gpu.yaml"


def test_the_gpu_campaign_leaves_eager_out_and_fits_two_commands() -> None:
    """Measured H100 cell times (mean per mode) x the campaign's cells: at most two 10-minute
    commands (about 8 minutes of cells each); eager (about 100 s a JAX cell) is not in it."""
    config = load_campaign(GPU_CAMPAIGN)
    assert "eager" not in config.modes
    seconds = pd.read_csv(GPU_EVIDENCE).groupby("mode")["cell_seconds"].mean()
    estimate = sum(seconds[cell.mode] for cell in plan_cells(config))
    assert estimate <= 2 * 8 * 60, f"{estimate:.0f} s of cells"
