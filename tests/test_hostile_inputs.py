"""Files aebench reads but did not write are read within bounds (issue 18, items 6 and 11): a
corrupt, half-written or bomb npz, an npz without test images, JSON nested too deeply or too
large, and an environment.json of the wrong shape are each one line, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from aebench.bench.report import environment_line
from aebench.bench.store import read_record
from aebench.data import datasets
from aebench.errors import AebenchError, DataError
from aebench.safe_files import MAX_READ_BYTES, open_own, read_json, read_text
from aebench.track.bundle import read_bundle

DEEP = "[" * 200_000 + "]" * 200_000  # deeper than Python's parser recursion allows


def mnist_arrays(test_images: int = 3) -> dict[str, np.ndarray]:
    return {
        "x_train": np.zeros((5, 28, 28), np.uint8),
        "y_train": np.zeros(5, np.uint8),
        "x_test": np.zeros((test_images, 28, 28), np.uint8),
        "y_test": np.zeros(test_images, np.uint8),
    }


def test_a_corrupt_or_half_written_npz_is_one_line(tmp_path: Path) -> None:
    whole = tmp_path / "whole.npz"
    np.savez_compressed(whole, **mnist_arrays())
    half = tmp_path / "half.npz"
    half.write_bytes(whole.read_bytes()[: len(whole.read_bytes()) // 2])
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    for path in (half, garbage):
        with pytest.raises(DataError, match=r"not a readable npz file"):
            datasets.read_mnist_npz(path)


def test_an_npz_without_test_images_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "empty_test.npz"
    np.savez(path, **mnist_arrays(test_images=0))
    with pytest.raises(DataError, match=r"x_test: holds no examples"):
        datasets.read_mnist_npz(path)


def test_an_npz_bomb_is_refused_before_it_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, **mnist_arrays())  # 8 KB of pixels compress to almost nothing
    monkeypatch.setattr(datasets, "MAX_NPZ_BYTES", 4096)  # as a 17 GiB npz is to the real 1 GiB bound
    with pytest.raises(DataError, match=r"expands to .* GiB; MNIST is 55 MB \(refused, nothing expanded\)"):
        datasets.read_mnist_npz(path)
    many = tmp_path / "many.npz"
    with zipfile.ZipFile(many, "w") as archive:
        for i in range(datasets.MAX_NPZ_MEMBERS + 1):
            archive.writestr(f"a{i}.npy", b"")
    with pytest.raises(DataError, match=r"holds 17 arrays"):
        datasets.read_mnist_npz(many)


def test_json_nested_too_deeply_or_too_large_is_refused(tmp_path: Path) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text(DEEP)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_json(deep)
    big = tmp_path / "big.json"
    big.write_text(json.dumps("x" * 2048))
    with pytest.raises(AebenchError, match="larger than"):
        read_text(big, limit=1024)


def test_a_deeply_nested_cell_record_is_not_a_record(tmp_path: Path) -> None:
    path = tmp_path / "vae_toy__torch__eager__16__spec__ieee-fp32.json"
    path.write_text(DEEP)
    assert read_record(path) is None  # reported as damaged, no RecursionError


def test_a_deeply_nested_run_json_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text(DEEP)
    with pytest.raises(AebenchError, match=r"run.json: not a readable run bundle \(ValueError: .*nested too deeply"):
        read_bundle(tmp_path)


@pytest.mark.parametrize("text", ["[1, 2]", '{"versions": "torch"}', "{", DEEP])
def test_an_environment_json_of_the_wrong_shape_is_one_line_of_the_report(tmp_path: Path, text: str) -> None:
    (tmp_path / "environment.json").write_text(text)
    line = environment_line(tmp_path)
    assert line.startswith(f"{tmp_path.name}: environment.json") and "\n" not in line


def exit_code(argv: list[str]) -> int:
    """``aebench ARGV`` in this process: its exit code (argparse's errors exit by SystemExit)."""
    from aebench.cli.main import main

    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def test_compare_refuses_an_output_it_cannot_write_before_it_reads_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = f"sqlite:///{tmp_path / 'never.db'}"
    assert exit_code(["compare", "--tracking-uri", store, "--csv", str(tmp_path)]) == 2
    assert "--csv: " in (err := capsys.readouterr().err) and "is a folder" in err
    assert exit_code(["compare", "--tracking-uri", store, "--markdown", str(tmp_path / "no" / "t.md")]) == 2
    assert "--markdown: cannot write" in capsys.readouterr().err
    if Path("/proc/self").is_dir():  # Linux: a folder whose permissions allow what it refuses (root most of all)
        assert exit_code(["compare", "--tracking-uri", store, "--markdown", "/proc/t.md"]) == 2
        assert "--markdown: cannot write /proc/t.md (" in capsys.readouterr().err
    assert not (tmp_path / "never.db").exists()  # refused before MLflow opened the store


def test_an_nll_k_beyond_any_use_is_refused_before_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_code(["train", "vae_toy", "--backend", "torch", "--nll-k", "2000000000"]) == 2
    assert "--nll-k: must be a whole number from 1 to 100,000" in capsys.readouterr().err


def test_a_number_that_does_not_fit_the_dtype_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "huge.yaml"
    spec.write_text("extends: vae_toy\noptimizer: {learning_rate: 1.0e308}\n")
    assert exit_code(["validate", str(spec)]) == 2
    assert "optimizer.learning_rate: 1e+308 does not fit float32 (largest 3.403e+38)" in capsys.readouterr().err
    spec.write_text("extends: vae_toy\noptimizer: {learning_rate: 1.0e308}\ndtype: float64\n")
    assert exit_code(["validate", str(spec)]) == 0


def test_labels_beyond_num_classes_are_one_line() -> None:
    labels = np.array([0, 3, 9])
    assert datasets.one_hot(labels, 10).tolist()[1] == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    with pytest.raises(
        DataError, match=r"num_classes: 2 classes, but the data's labels run from 0 to 9; allowed: at least 10"
    ):
        datasets.one_hot(labels, 2)


def test_an_unknown_tracking_scheme_and_an_unusable_merge_out_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["compare", "--tracking-uri", "foo://bar"]) == 2
    assert "foo://bar: not a tracking URI; allowed schemes: file, sqlite, http" in capsys.readouterr().err
    plain = tmp_path / "plain"
    plain.write_text("a file")
    assert exit_code(["merge", str(tmp_path), "--out", str(plain)]) == 2
    assert f"--out: {plain} is a file, not a folder" in capsys.readouterr().err
    assert exit_code(["merge", str(tmp_path), "--out", str(plain / "below")]) == 2
    assert "--out: cannot write to" in capsys.readouterr().err


def test_a_folder_that_cannot_be_made_is_one_line(tmp_path: Path) -> None:
    from aebench.safe_files import own_folder

    (tmp_path / "plain").write_text("a file")
    with pytest.raises(AebenchError, match=r"plain/cells: cannot make this folder \(Not a directory\)"):
        own_folder(tmp_path / "plain" / "cells")


def test_a_time_budget_spent_before_the_first_cell_is_said_plainly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--specs", "vae_toy", "--backends", "torch", "--modes", "eager", "--name", "spent"]
    assert exit_code([*argv, "--results", str(tmp_path), "--max-minutes", "0.00001", "--no-mlflow"]) == 0
    err = capsys.readouterr().err
    assert "1 cells not started; the same command resumes them" in err and "no cell is recorded" in err


def test_text_in_a_number_field_of_a_campaign_reads_as_missing(tmp_path: Path) -> None:
    import shutil

    import pandas as pd

    from aebench.bench.report import write_report
    from aebench.bench.store import ResultStore

    folder = tmp_path / "campaign"
    shutil.copytree(Path(__file__).resolve().parents[1] / "results" / "cpu-2026-11-22", folder)
    store = ResultStore(folder)
    key = store.table()["key"][0]
    record = store.record(key)
    record["median_step_ms"] = "fast"  # the record and its row agree, so nothing is rebuilt
    store.record_path(key).write_text(json.dumps(record))
    table = pd.read_csv(folder / "cells.csv", dtype=str, keep_default_na=False)
    table.loc[table["key"] == key, "median_step_ms"] = "fast"
    table.to_csv(folder / "cells.csv", index=False)
    assert pd.isna(store.table().set_index("key").loc[key, "median_step_ms"])
    md, _ = write_report([folder], tmp_path / "out")
    assert "## vae_dense" in md.read_text()


def test_validate_refuses_fewer_classes_than_mnist_has(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "two.yaml"
    spec.write_text("extends: cvae\nmodel: {conditioning: {num_classes: 2}}\n")
    assert exit_code(["validate", str(spec)]) == 2
    assert "model.conditioning.num_classes: MNIST's labels are the digits 0-9; allowed: >= 10, got 2" in (
        capsys.readouterr().err
    )


def aebench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, timeout=60)


def plant(table: Path, kind: str) -> None:
    """Something other than a table aebench wrote, at ``table``."""
    if kind == "link to /dev/zero":
        table.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(table)
    elif kind == "folder":
        table.mkdir()
    else:
        with open(table, "wb") as handle:  # sparse: 64 MiB and a byte more without writing them
            handle.truncate(MAX_READ_BYTES + 1)


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "folder", "over the size cap"])
def test_a_cells_csv_that_is_not_a_table_aebench_wrote_is_one_line(tmp_path: Path, kind: str) -> None:
    """Before, a FIFO was taken for a missing table and replaced by a rebuilt one, and a bench
    appending to it waited for a reader without end."""
    folder = tmp_path / "campaign"
    (folder / "cells").mkdir(parents=True)
    plant(folder / "cells.csv", kind)
    planted = os.lstat(folder / "cells.csv")
    proc = aebench("report", str(folder))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"aebench: error: {folder / 'cells.csv'}: "), proc.stderr
    assert os.lstat(folder / "cells.csv").st_ino == planted.st_ino  # left as it was, not replaced


def test_a_campaign_whose_cells_csv_is_a_fifo_is_refused_before_any_cell_runs(tmp_path: Path) -> None:
    (tmp_path / "fifo").mkdir()
    os.mkfifo(tmp_path / "fifo" / "cells.csv")
    flags = ["--specs", "vae_toy", "--backends", "torch", "--modes", "eager", "--blocks", "2", "--no-mlflow"]
    proc = aebench("bench", *flags, "--results", str(tmp_path), "--name", "fifo")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.splitlines()[-1] == (
        f"aebench: error: {tmp_path / 'fifo' / 'cells.csv'}: is not a regular file; "
        "aebench does not write through it (remove it)"
    )
    assert not (tmp_path / "fifo" / "cells").exists()


def test_appending_to_a_fifo_is_refused_without_waiting_for_a_reader(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "table.csv")
    with pytest.raises(AebenchError, match="table.csv: is not a regular file"):
        open_own(tmp_path / "table.csv", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
