"""Reruns say what they reuse (issue 17, items 2 and 4): a campaign's identity covers every
setting that changes a number, a resume with other settings is refused naming them, and a
report over several campaigns names each and never overwrites one's plots with another's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from cases import bench_command, cheap_backend

from aebench.bench.campaign import load_campaign, plan_cells
from aebench.bench.cell import Cell
from aebench.bench.identity import cell_settings, changed_cells, differences
from aebench.bench.report import write_report
from aebench.bench.timing import Protocol

SHORT = ["--warmup-seconds", "0.05", "--blocks", "2", "--block-seconds", "0.05", "--no-mlflow"]


def run(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A one-cell campaign measured with two 0.05 s blocks, and what its command printed."""
    results = tmp_path_factory.mktemp("results")
    proc = run(bench_command(results, "short", *SHORT))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return results, proc


def test_bench_says_which_cell_it_starts_before_it_runs(measured: tuple[Path, subprocess.CompletedProcess]) -> None:
    _, proc = measured
    lines = proc.stderr.splitlines()
    started = next(
        i for i, line in enumerate(lines) if line.endswith("started (a fresh process; about a minute per cell)")
    )
    finished = next(i for i, line in enumerate(lines) if "ms/step" in line)
    assert started < finished and lines[started].startswith("[1/1] vae_toy|")
    assert "firm" in lines[finished] or "UNSTABLE" in lines[finished]


def test_a_resume_with_longer_blocks_is_refused_naming_the_difference(
    measured: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    results = tmp_path / "results"
    shutil.copytree(measured[0], results)
    before = (results / "short" / "cells.csv").read_text()
    longer = [*SHORT[:3], "3", *SHORT[4:]]
    proc = run(bench_command(results, "short", *longer))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "1 recorded cell(s) were measured with other settings" in last
    assert "protocol.blocks: 2 -> 3" in last and "--rerun-changed" in last and "--name" in last
    assert (results / "short" / "cells.csv").read_text() == before  # nothing measured, nothing lost
    proc = run(bench_command(results, "short", *longer, "--rerun-changed"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    [record] = [json.loads(p.read_text()) for p in (results / "short" / "cells").glob("*.json")]
    assert json.loads(record["settings"])["protocol.blocks"] == "3"
    assert len(pd.read_csv(results / "short" / "cells.csv")) == 2  # the earlier row stays as history


def test_every_setting_that_changes_a_number_is_in_the_identity(tmp_path: Path) -> None:
    spec = tmp_path / "toy.yaml"
    spec.write_text("extends: vae_toy\n")
    cell = Cell(spec=str(spec), backend=cheap_backend(), mode="eager", batch_size=16, protocol=Protocol(blocks=3))
    settings = cell_settings(cell)
    assert {"protocol.blocks", "protocol.block_seconds", "steps_per_call", "spec_sha256", "data", "aebench"} <= set(
        settings
    )
    assert any(name.startswith("version.") for name in settings)  # the backend's framework versions
    spec.write_text("extends: vae_toy\noptimizer: {learning_rate: 0.01}\n")  # the file edited since
    assert differences(settings, cell_settings(cell)) == [
        f"spec_sha256: {settings['spec_sha256']} -> {cell_settings(cell)['spec_sha256']}"
    ]


def test_a_record_of_an_older_aebench_counts_as_changed() -> None:
    from aebench.bench.campaign import CampaignConfig

    [cell] = plan_cells(CampaignConfig(specs=("vae_toy",), backends=(cheap_backend(),), modes=("eager",)))
    changed = changed_cells([cell], {cell.key: {"key": cell.key, "status": "ok"}})
    assert changed[cell.key] and all("(not recorded) ->" in d for d in changed[cell.key])


@pytest.mark.parametrize(
    "campaign", sorted((Path(__file__).parents[1] / "results" / "campaigns").glob("*.yaml")), ids=lambda p: p.stem
)
def test_every_shipped_campaign_file_loads(campaign: Path) -> None:
    """The campaigns in results/campaigns name registered backends, shipped specs and modes."""
    config = load_campaign(campaign)
    assert config.specs and config.backends and config.modes


def test_a_rejected_bench_command_creates_no_results_folder(tmp_path: Path) -> None:
    results = tmp_path / "fresh" / "bench-results"
    proc = run(bench_command(results, "x", "--modes", "warp"))
    assert proc.returncode == 2 and "--modes" in proc.stderr
    assert not (tmp_path / "fresh").exists()


def test_a_report_over_two_campaigns_names_each_and_overwrites_nothing(
    measured: tuple[Path, subprocess.CompletedProcess], tmp_path: Path
) -> None:
    first, second = tmp_path / "A" / "short", tmp_path / "B" / "short"  # the same folder name twice
    shutil.copytree(measured[0] / "short", first)
    shutil.copytree(measured[0] / "short", second)
    md, _ = write_report([first, second], tmp_path / "out")
    text = md.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 2 and len(set(headings)) == 2
    assert headings[0].endswith("(A-short)") and headings[1].endswith("(B-short)")
    plots = sorted(p.name for p in (tmp_path / "out" / "plots").iterdir())
    assert len(plots) == 4 and plots[0].startswith("A-short-") and plots[-1].startswith("B-short-")
    assert all(
        line.startswith("**Fastest:") or "No firm" in line for line in text.splitlines() if line.startswith("**")
    )


def test_a_wrong_data_path_is_one_line_and_a_cell_failed_on_bad_data_reruns_with_good_data(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = run([*bench_command(results, "d", *SHORT), "--data", str(tmp_path / "missing.npz")])
    assert proc.returncode == 2 and "--data: no MNIST file at" in proc.stderr and not results.exists()
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not an npz")
    mnist_cell = [arg if arg != "vae_toy" else "ae" for arg in bench_command(results, "d", *SHORT)]
    proc = run([*mnist_cell, "--data", str(garbage)])
    assert proc.returncode == 1 and "not a readable npz file" in proc.stderr
    proc = run(mnist_cell)  # the bundled subset: the failed cell's data setting changed, so it runs again
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert pd.read_csv(results / "d" / "cells.csv")["status"].tolist() == ["failed", "ok"]
