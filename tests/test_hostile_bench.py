"""Benchmark campaigns under hostile use (issue 11, items 2, 3, 4, 5 and the bench parts of
10 and 11): a damaged cells.csv, two campaigns in one folder, a killed campaign parent, a
device peak measured on a busy machine, unwritable output folders, readable default names,
flags checked before any framework loads, and plots that show what separates the cells.

Every cell here is cheap (vae_toy, eager, a short protocol) and runs in a real process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cases import bench_command, cheap_backend
from matplotlib.colors import to_rgba
from matplotlib.container import ErrorbarContainer

from aebench.bench.campaign import CampaignConfig, load_campaign, run_campaign
from aebench.bench.lock import LOCK_NAME, campaign_lock
from aebench.bench.report import backend_colours, loss_figure, samples_figure, samples_interval
from aebench.bench.store import COLUMNS, OLDER_LAYOUTS, ResultStore
from aebench.bench.timing import Protocol

ROOT = Path(__file__).resolve().parents[1]
SHORT = Protocol(warmup_seconds=0.05, min_warmup_calls=1, blocks=2, block_seconds=0.05, max_steps=2000)
SHORT_FLAGS = ["--warmup-seconds", "0.05", "--blocks", "2", "--block-seconds", "0.05", "--no-mlflow"]
LONG_FLAGS = ["--warmup-seconds", "60", "--blocks", "2", "--block-seconds", "0.05", "--no-mlflow"]
FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "flax")


def cheap_config(name: str, batch_sizes: tuple[int, ...] = (16, 32)) -> CampaignConfig:
    return CampaignConfig(
        specs=("vae_toy",),
        backends=(cheap_backend(),),
        modes=("eager",),
        batch_sizes=batch_sizes,
        name=name,
        protocol=SHORT,
    )


def aebench(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr


@pytest.fixture(scope="module")
def measured(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-cell campaign; tests damage copies of it."""
    store = run_campaign(cheap_config("measured"), tmp_path_factory.mktemp("campaign"))
    assert sorted(store.table()["status"]) == ["ok", "ok"]
    return store.folder


@pytest.fixture
def campaign(measured: Path, tmp_path: Path) -> Path:
    """A copy of the finished campaign, to damage; record files keep their times (their order)."""
    copy = tmp_path / "measured"
    shutil.copytree(measured, copy)
    return copy


def csv_lines(folder: Path) -> list[str]:
    return (folder / "cells.csv").read_text().splitlines(keepends=True)


def assert_table_matches_records(folder: Path) -> None:
    store = ResultStore(folder)
    assert store.problems(store.records()) == []
    keys = sorted(json.loads(p.read_text())["key"] for p in (folder / "cells").glob("*.json"))
    assert sorted(pd.read_csv(folder / "cells.csv")["key"]) == keys


# item 2: a damaged cells.csv is rebuilt from the cell records, and says so


def test_a_line_cut_short_is_rebuilt_from_the_records_by_report(campaign: Path) -> None:
    lines = csv_lines(campaign)
    damaged = "".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2]
    (campaign / "cells.csv").write_text(damaged)
    proc = aebench("report", str(campaign))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("\n") == 1 and "did not match the cell records" in proc.stderr, proc.stderr
    assert "line 3 has" in proc.stderr and "rebuilt from the 2 records" in proc.stderr
    [backup] = campaign.glob("cells.csv.damaged-*")
    assert backup.read_text() == damaged  # nothing is lost: the damaged table is kept
    assert_table_matches_records(campaign)
    assert "## vae_toy, batch 16" in (campaign / "report.md").read_text()
    assert "## vae_toy, batch 32" in (campaign / "report.md").read_text()


def test_a_line_with_extra_fields_is_one_line_not_a_traceback(campaign: Path) -> None:
    lines = csv_lines(campaign)
    lines[1] = lines[1].rstrip("\n") + ",extra,fields\n"
    (campaign / "cells.csv").write_text("".join(lines))
    proc = aebench("report", str(campaign))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"line 2 has {len(COLUMNS) + 2} fields" in proc.stderr, proc.stderr
    assert_table_matches_records(campaign)


def test_a_garbage_line_is_repaired_when_the_campaign_resumes_and_nothing_reruns(campaign: Path) -> None:
    lines = csv_lines(campaign)
    lines[1] = "\x00\x17garbage that is no row\n"
    (campaign / "cells.csv").write_text("".join(lines))
    started = {p.name: json.loads(p.read_text())["started"] for p in (campaign / "cells").glob("*.json")}
    said: list[str] = []
    run_campaign(cheap_config("measured"), campaign.parent, say=said.append)
    assert len(said) == 1 and "did not match the cell records" in said[0] and "\n" not in said[0], said
    assert started == {p.name: json.loads(p.read_text())["started"] for p in (campaign / "cells").glob("*.json")}
    assert_table_matches_records(campaign)


def test_a_row_that_differs_from_its_record_takes_the_records_value(campaign: Path) -> None:
    table = pd.read_csv(campaign / "cells.csv")
    truth = table.loc[0, "samples_per_s"]
    table.loc[0, "samples_per_s"] = truth * 10
    table.to_csv(campaign / "cells.csv", index=False)
    proc = aebench("report", str(campaign))
    assert proc.returncode == 0 and "differs from its record in samples_per_s" in proc.stderr, proc.stderr
    assert pd.read_csv(campaign / "cells.csv").loc[0, "samples_per_s"] == pytest.approx(truth, rel=1e-12)


def test_a_cell_whose_record_is_missing_or_unreadable_runs_again(campaign: Path) -> None:
    first, second = sorted((campaign / "cells").glob("*.json"))
    first.unlink()
    second.write_text('{"key": "cut sh')
    said: list[str] = []
    store = run_campaign(cheap_config("measured"), campaign.parent, say=said.append)
    assert len(said) == 1 and "is not a cell record" in said[0], said
    assert list((campaign / "cells").glob(f"{second.name}.damaged-*"))  # the unreadable file is kept aside
    assert sorted(store.table()["status"]) == ["ok", "ok"]
    assert_table_matches_records(campaign)


@pytest.mark.parametrize("layout", OLDER_LAYOUTS, ids=lambda columns: f"{len(columns)}-columns")
def test_a_table_of_an_older_column_layout_is_read_and_upgraded_before_appending(
    campaign: Path, layout: list[str]
) -> None:
    old = pd.read_csv(campaign / "cells.csv")[layout]
    old.to_csv(campaign / "cells.csv", index=False)
    assert ResultStore(campaign).problems(ResultStore(campaign).records()) == []  # read as it is
    (campaign / "cells" / sorted(os.listdir(campaign / "cells"))[0]).unlink()
    said: list[str] = []
    run_campaign(cheap_config("measured"), campaign.parent, say=said.append)
    assert_table_matches_records(campaign)
    assert list(pd.read_csv(campaign / "cells.csv").columns) == COLUMNS


# item 3: one campaign at a time in a folder


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def lock_holder(folder: Path) -> dict:
    try:
        return json.loads((folder / LOCK_NAME).read_text())
    except (OSError, ValueError):
        return {}


def cell_processes(parent: int) -> list[int]:
    """Pids of live ``aebench.bench.cell`` processes whose parent is ``parent``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if b"aebench.bench.cell" in command and int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    """Processes a test starts; whatever is left of them is killed at the end."""
    processes: list[subprocess.Popen] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_second_campaign_in_the_same_folder_exits_2_naming_the_holder(
    tmp_path: Path, started: list[subprocess.Popen]
) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    folder = tmp_path / "twice"
    first = subprocess.Popen(
        bench_command(tmp_path, "twice", *LONG_FLAGS), start_new_session=True, stderr=subprocess.DEVNULL
    )
    started.append(first)
    wait_for(lambda: lock_holder(folder).get("pid") == first.pid and cell_processes(first.pid), 120, "the first cell")
    second = subprocess.run(bench_command(tmp_path, "twice", *SHORT_FLAGS), capture_output=True, text=True, timeout=120)
    message = one_error_line(second)
    assert "a campaign is already running in this folder" in message
    assert f"pid {first.pid} on {socket.gethostname()}, since " in message and "bench" in message
    assert not (folder / "cells.csv").exists()  # the second one wrote nothing
    os.kill(first.pid, signal.SIGKILL)  # the kernel drops the flock of a killed holder
    first.wait()
    with campaign_lock(folder):
        pass


# item 4: a killed campaign takes its cell with it, and leaves no exchange files


def test_killing_the_campaign_kills_its_cell_and_no_exchange_folder_remains(
    tmp_path: Path, started: list[subprocess.Popen]
) -> None:
    if not Path("/proc").is_dir():
        pytest.skip("needs /proc")
    folder = tmp_path / "orphan"
    parent = subprocess.Popen(
        bench_command(tmp_path, "orphan", *LONG_FLAGS), start_new_session=True, stderr=subprocess.DEVNULL
    )
    started.append(parent)
    wait_for(lambda: cell_processes(parent.pid), 120, "the cell process")
    [cell] = cell_processes(parent.pid)
    assert [p.name for p in (folder / "tmp").iterdir()] == [f"vae_toy__{cheap_backend()}__eager__16__spec__ieee-fp32"]
    os.kill(parent.pid, signal.SIGKILL)  # the parent only: the cell is in a session of its own
    parent.wait()
    wait_for(lambda: not alive(cell), 10, f"the orphaned cell {cell} to die")
    again = subprocess.run(bench_command(tmp_path, "orphan", *SHORT_FLAGS), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (folder / "tmp").exists()
    assert pd.read_csv(folder / "cells.csv")["status"].tolist() == ["ok"]


# item 5: the device peak records when and under what load it was measured, and is measured again


def peak_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gflops: float) -> tuple[Path, str]:
    """A peak cache in the layout of the first aebench (a bare number) holding ``gflops`` for
    the cheap backend's device; its path and key."""
    from aebench.plugins.registry import load_backend

    backend = load_backend(cheap_backend())
    key = f"{backend.device()}|{backend.name}|float32|ieee-fp32"
    monkeypatch.setenv("AEBENCH_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "cache" / "device_peaks.json"
    path.parent.mkdir()
    path.write_text(json.dumps({key: gflops}))
    return path, key


def test_a_cell_above_the_cached_peak_measures_the_peak_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, key = peak_cache(tmp_path, monkeypatch, gflops=1e-6)  # as if measured on a very busy machine
    store = run_campaign(cheap_config("peak", batch_sizes=(16,)), tmp_path / "results")
    row = store.record(store.table()["key"][0])
    assert row["gflops_per_s"] > 1e-6 and row["device_peak_gflops"] > row["gflops_per_s"]
    assert 0 < row["peak_fraction"] < 1
    assert row["peak_measured"][:4].isdigit() and isinstance(row["peak_load"], float)
    assert "a cell reached" in row["peak_reason"]
    cache = json.loads(path.read_text())
    assert cache[key] == row["device_peak_gflops"]  # the old layout's value, still a bare number
    assert [h["gflops"] for h in cache["details"][key]["history"]] == [1e-6]  # both are kept
    assert store.table()["peak_measured"][0] == row["peak_measured"]


def test_remeasure_peak_measures_this_campaigns_peaks_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, key = peak_cache(tmp_path, monkeypatch, gflops=1e9)  # too high to be exceeded: only the flag re-measures
    before = time.time()
    proc = subprocess.run(
        bench_command(tmp_path, "again", *SHORT_FLAGS, "--remeasure-peak"), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    cache = json.loads(path.read_text())
    details = cache["details"][key]
    assert cache[key] < 1e9 and details["measured_unix"] >= before and "--remeasure-peak" in details["reason"]
    assert [h["gflops"] for h in details["history"]] == [1e9]
    row = pd.read_csv(tmp_path / "again" / "cells.csv").iloc[0]
    assert row["device_peak_gflops"] == pytest.approx(cache[key]) and row["peak_measured"] == details["measured"]


# item 10: unwritable --results and --out are one line naming the flag


def test_results_that_is_a_file_or_under_a_file_is_one_line(tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder")
    for results in (plain, plain / "sub"):
        message = one_error_line(aebench("bench", "--specs", "vae_toy", "--results", str(results)))
        assert message.startswith("aebench: error: --results: ") and str(results) in message, message


def test_results_in_a_read_only_folder_is_one_line(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (the regular-file cases above fail for root too)")
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    try:
        message = one_error_line(aebench("bench", "--specs", "vae_toy", "--results", str(read_only)))
        assert "--results: cannot write to" in message and str(read_only) in message
        message = one_error_line(aebench("report", str(ROOT / "results" / "cpu-2026-11-22"), "--out", str(read_only)))
        assert "--out: cannot write to" in message
    finally:
        read_only.chmod(0o700)


def test_report_out_on_a_file_or_under_a_file_is_one_line(measured: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.txt"
    plain.write_text("not a folder")
    for out in (plain, plain / "sub"):
        message = one_error_line(aebench("report", str(measured), "--out", str(out)))
        assert message.startswith("aebench: error: --out: ") and str(out) in message, message
    assert plain.read_text() == "not a folder"


# item 11: readable default names in an untracked folder


def test_the_default_campaign_name_reads_what_is_measured() -> None:
    config = CampaignConfig(
        specs=("vae_dense", "vae_conv"), backends=("torch", "jax"), modes=("compiled", "fast"), batch_sizes=(1024,)
    )
    assert config.campaign_name() == "vae_dense-vae_conv_torch-jax_compiled-fast_b1024"
    every = CampaignConfig(specs=tuple(f"spec_number_{i}" for i in range(12)), backends=("torch", "jax", "keras"))
    name = every.campaign_name()
    assert len(name) <= 80 and name.startswith("spec_number_0-spec_number_1-") and name == every.campaign_name()
    assert name != CampaignConfig(specs=every.specs, backends=("torch",)).campaign_name()
    for path in sorted((ROOT / "results" / "campaigns").glob("*.yaml")):
        name = load_campaign(path).campaign_name()
        assert 0 < len(name) <= 80 and "/" not in name, (path, name)


def test_bench_writes_to_bench_results_and_the_same_command_resumes(tmp_path: Path) -> None:
    command = ["bench", "--specs", "vae_toy", "--backends", cheap_backend(), "--modes", "eager"]
    command += ["--batch-sizes", "16", *SHORT_FLAGS]
    first = aebench(*command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    folder = tmp_path / "bench-results" / f"vae_toy_{cheap_backend()}_eager_b16"
    assert pd.read_csv(folder / "cells.csv")["status"].tolist() == ["ok"]
    again = aebench(*command, cwd=tmp_path)
    assert again.returncode == 0 and ": 1 cells, results in" in again.stderr, again.stderr[-2000:]
    assert len(pd.read_csv(folder / "cells.csv")) == 1  # resumed: nothing measured twice
    assert "bench-results/" in (ROOT / ".gitignore").read_text().splitlines()


# item 11: flags are checked before any framework is imported


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--backends", "nosuch"], "--backends: no backend 'nosuch'"),
        (["--specs", "nosuch"], "--specs: no such spec file or shipped spec"),
        (["--modes", "jit"], "--modes: must be one of eager, compiled, fast, got 'jit'"),
        (["--name", "../elsewhere"], "--name: must be a folder name"),
    ],
)
def test_bad_flags_are_refused_before_any_framework_loads(flags: list[str], message: str, tmp_path: Path) -> None:
    start = time.monotonic()
    proc = aebench("bench", *flags, "--results", str(tmp_path))
    assert time.monotonic() - start < 3.0  # importing a framework alone takes longer than this
    assert message in one_error_line(proc), proc.stderr
    probe = (
        "import sys\n"
        "from aebench.cli.main import main\n"
        f"code = main(['bench', *{flags!r}, '--results', {str(tmp_path)!r}])\n"
        f"print(code, sorted(f for f in {FRAMEWORKS!r} if f in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "2 []", out.stdout + out.stderr


# item 11: plots with error bars, a colour per backend, and differences from a reference


def fake_cells() -> pd.DataFrame:
    blocks = {"torch": [1.0, 1.1, 1.2, 1.3, 2.0], "jax": [0.5, 0.5, 0.6, 0.7, 0.9]}
    rows = []
    for backend, times in blocks.items():
        median = float(np.median(times))
        rows.append(
            {
                "backend": backend,
                "mode": "eager",
                "batch_size": 100,
                "median_step_ms": median,
                "iqr_step_ms": float(np.subtract(*np.percentile(times, [75, 25]))),
                "samples_per_s": 100 * 1e3 / median,
                "block_step_ms": json.dumps(times),
            }
        )
    return pd.DataFrame(rows)


def test_the_samples_plot_has_iqr_error_bars_and_a_colour_per_backend() -> None:
    cells = fake_cells()
    colours = backend_colours(["torch", "jax", "keras"])
    assert colours == backend_colours(["keras", "jax", "torch", "jax"])  # the same in every plot
    assert len(set(colours.values())) == 3
    figure = samples_figure(cells, "toy", colours)
    ax = figure.axes[0]
    [errorbars] = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    _, _, (segments,) = errorbars.lines
    spans = sorted((round(s[0][0], 6), round(s[1][0], 6)) for s in segments.get_segments())
    expected = sorted((round(lo, 6), round(hi, 6)) for lo, hi in (samples_interval(r) for _, r in cells.iterrows()))
    assert spans == expected  # the interquartile range of block step times, as samples/s
    q1, q3 = np.percentile([1.0, 1.1, 1.2, 1.3, 2.0], [25, 75])
    assert samples_interval(cells.iloc[0]) == pytest.approx((1e5 / q3, 1e5 / q1))
    labels = [t.get_text() for t in ax.get_yticklabels()]
    bars = sorted(ax.patches, key=lambda p: p.get_y())
    assert [b.get_facecolor()[:3] for b in bars] == [to_rgba(colours[text.split()[0]])[:3] for text in labels]
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"torch", "jax"}


def test_the_loss_plot_shows_each_cell_minus_the_reference_and_the_reference_apart() -> None:
    steps = [1, 2, 3, 10, 20]
    reference = pd.Series([5.0, 4.0, 3.0, 2.0, 1.0], index=steps)
    curves = {"torch eager": reference, "jax eager": reference.copy(), "jax fast": reference + 0.5}
    styles = {"torch eager": ("C0", "-"), "jax eager": ("C1", "-"), "jax fast": ("C1", ":")}
    figure = loss_figure(curves, "torch eager", styles, "toy")
    top, bottom = figure.axes
    lines = {line.get_label(): line for line in top.get_lines()}
    assert np.all(lines["jax eager"].get_ydata() == 0.0)  # identical curves no longer hide each other
    assert np.allclose(lines["jax fast"].get_ydata(), 0.5)
    assert lines["jax fast"].get_color() == "C1" and lines["jax fast"].get_linestyle() == ":"
    [own] = bottom.get_lines()
    assert list(own.get_ydata()) == list(reference.values)
    assert bottom.get_position().height < top.get_position().height


def test_the_report_of_a_campaign_draws_both_plots_per_section(measured: Path, tmp_path: Path) -> None:
    from aebench.bench.report import write_report

    md, page = write_report([measured], tmp_path / "out")
    text = md.read_text()
    assert "## vae_toy, batch 32, float32, ieee-fp32" in text and "| x fastest |" in text
    for batch in (16, 32):
        for plot in ("samples", "loss"):
            plot_file = tmp_path / "out" / "plots" / f"{measured.name}-vae_toy-{batch}-float32-ieee-fp32-{plot}.png"
            assert plot_file.stat().st_size > 1000 and f"plots/{plot_file.name}" in page.read_text()
