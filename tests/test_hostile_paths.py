"""Hostile paths in the folders aebench writes and sends (issue 18, items 1, 2, 3, 4, 7, 8).

A results folder may be shared, and a bundle may come from anyone: links planted where aebench
writes its own files, artifacts that are links or changed since run.json listed them, links in
the folders ``merge`` copies, record fields that would become paths, two spec files with one
stem, and files in cells/ that aebench did not write. Every campaign folder and bundle here is
built by hand from a committed record (no framework trains); every link lies in tmp_path.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from test_hostile_bench import ROOT, aebench, one_error_line
from test_tracking import small_record

from aebench.bench.campaign import CampaignConfig, plan_cells
from aebench.bench.cell import Cell
from aebench.bench.executor import LocalExecutor
from aebench.bench.merge import merge_results
from aebench.bench.report import write_report
from aebench.bench.store import ResultStore, safe_name
from aebench.errors import AebenchError
from aebench.track.bundle import RUN_FILE, note_logged, read_bundle, reserve_space, staged_artifacts, write_bundle
from aebench.track.tracking import log_bundle

TEMPLATE = ROOT / "results" / "cpu-2026-11-22" / "cells" / "vae_conv__jax__eager__128__spec__ieee-fp32.json"
PRECIOUS = "precious, not aebench's\n"


def record(spec: str = "toy", backend: str = "torch", batch_size: int = 16) -> dict:
    """A measured cell's record (a committed one, renamed)."""
    key = f"{spec}|{backend}|eager|{batch_size}|spec|ieee-fp32"
    return {**json.loads(TEMPLATE.read_text()), "key": key, "spec": spec, "backend": backend, "batch_size": batch_size}


def campaign(folder: Path, *rows: dict) -> Path:
    """A campaign folder holding ``rows`` as records and table rows."""
    store = ResultStore(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows or (record(),):
        store.append(row)
    return folder


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A file of the user's that a planted link points to; it must never change."""
    path = tmp_path / "victim"
    path.write_text(PRECIOUS)
    return path


def plant(link: Path, target: Path) -> Path:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target)
    return link


# item 1: every write into a folder aebench was given refuses to follow a link


def test_links_planted_in_a_campaign_folder_are_refused_never_written_through(tmp_path: Path, victim: Path) -> None:
    folder = campaign(tmp_path / "F")
    plant(folder / "campaign.lock", victim)
    with (folder / "cells.csv").open("a") as table:
        table.write("junk\n")
    line = one_error_line(aebench("report", str(folder)))
    assert "campaign.lock: is a symbolic link" in line and victim.read_text() == PRECIOUS
    (folder / "campaign.lock").unlink()

    store = ResultStore(folder)
    row = record(backend="jax")
    plant(folder / ".cells.csv.tmp", victim)  # the temporary names of earlier versions
    plant(folder / "cells" / f".{safe_name(row['key'])}.json.tmp", victim)
    store.append(row)
    store.write_table(list(store.records().rows.values()))
    assert victim.read_text() == PRECIOUS and len(store.table()) == 2

    plant(folder / "logs" / f"{safe_name(row['key'])}.log", victim)
    cell = Cell(spec="toy", backend="jax", mode="eager", batch_size=16)
    [(_, failed)] = LocalExecutor(folder / "logs", timeout_s=60).run_all([cell], lambda _: True)
    assert failed["status"] == "failed" and "is a symbolic link" in failed["reason"] and victim.read_text() == PRECIOUS

    (folder / "cells.csv").unlink()
    plant(folder / "cells.csv", victim)
    with pytest.raises(AebenchError, match=r"cells\.csv: is a symbolic link"):
        store.append(record(backend="flax"))
    assert victim.read_text() == PRECIOUS


def test_links_planted_in_a_bundle_are_refused_never_written_through(tmp_path: Path, victim: Path) -> None:
    bundle = write_bundle(small_record(tmp_path / "src"), tmp_path / "B")
    plant(bundle / "logged.tmp", victim)  # the temporary name of earlier versions
    note_logged(bundle, {"tracking_uri": "sqlite:///x.db", "run_id": "1"})
    assert victim.read_text() == PRECIOUS and "sqlite:///x.db" in (bundle / "logged.json").read_text()
    for name, act in (
        ("logged.json", lambda: note_logged(bundle, {"tracking_uri": "sqlite:///y.db"})),
        (".space_reserve", lambda: reserve_space(bundle)),
        (RUN_FILE, lambda: write_bundle(small_record(tmp_path / "src"), bundle)),
    ):
        (bundle / name).unlink(missing_ok=True)
        plant(bundle / name, victim)
        with pytest.raises(AebenchError, match=f"{name}: is a symbolic link"):
            act()
        assert victim.read_text() == PRECIOUS
        (bundle / name).unlink()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    plant(tmp_path / "C" / "artifacts", elsewhere)
    with pytest.raises(AebenchError, match="artifacts: is a symbolic link"):
        write_bundle(small_record(tmp_path / "src"), tmp_path / "C")
    assert list(elsewhere.iterdir()) == []


# item 2: `aebench log` sends only the bundle's own regular files, as run.json recorded them


def test_log_sends_no_link_and_no_artifact_changed_since_run_json(tmp_path: Path, victim: Path) -> None:
    made = itertools.count()

    def bundle_with(change) -> Path:
        folder = write_bundle(small_record(tmp_path / "src"), tmp_path / f"B{next(made)}")
        change(folder)
        return folder

    def list_extra(folder: Path) -> None:
        run = json.loads((folder / RUN_FILE).read_text())
        run["artifacts"]["extra.txt"] = "0" * 64
        (folder / RUN_FILE).write_text(json.dumps(run))
        plant(folder / "artifacts" / "extra.txt", victim)

    def relink(folder: Path) -> None:
        (folder / "artifacts" / "spec.yaml").unlink()
        plant(folder / "artifacts" / "spec.yaml", victim)

    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    for change, why in (
        (relink, "is a symbolic link"),
        (list_extra, "is a symbolic link"),
        (lambda f: (f / "artifacts" / "spec.yaml").write_text("edited since\n"), "do not match the sha256"),
    ):
        folder = bundle_with(change)
        with pytest.raises(AebenchError, match=why):
            log_bundle(folder, uri)
        assert not (tmp_path / "store").exists() and not (folder / "logged.json").exists()  # nothing was sent

    folder = bundle_with(lambda f: None)
    bundle = read_bundle(folder)
    relink(folder)  # changed after it was read, before it is sent
    with pytest.raises(AebenchError, match="is a symbolic link"), staged_artifacts(bundle):
        pass


# item 3: merge copies no link


@pytest.mark.parametrize("where", ["logs/up", "mlflow/secret", "environment.json", "cells/x__a__b__c__d__e.json"])
def test_merge_copies_no_link_and_writes_nothing_when_it_meets_one(tmp_path: Path, victim: Path, where: str) -> None:
    source = campaign(tmp_path / "A")
    (source / "logs").mkdir()
    (source / "logs" / "cell.log").write_text("a log\n")
    plant(source / where, {"logs/up": Path(".."), "mlflow/secret": tmp_path}.get(where, victim))
    with pytest.raises(AebenchError, match=r"is a symbolic link|not a cell record"):
        merge_results([source], tmp_path / "out")
    assert not (tmp_path / "out").exists()
    (source / where).unlink()
    store, _ = merge_results([source], tmp_path / "out")
    assert (tmp_path / "out" / "logs" / "A" / "cell.log").read_text() == "a log\n" and len(store.table()) == 1


# item 4: no field of a record becomes part of a path unless it is a name


def test_a_record_whose_spec_is_a_path_is_damaged_and_no_plot_lands_outside(tmp_path: Path) -> None:
    escaping = record(spec="../../../../escaped/ESCAPED", backend="jax")  # out/plots/F-../../../.. is tmp_path
    folder = campaign(tmp_path / "F", record(), escaping)
    lines: list[str] = []
    write_report([folder], tmp_path / "out", say=lines.append)
    assert not (tmp_path / "escaped").exists()
    assert {p.parent for p in (tmp_path / "out").rglob("*.png")} == {tmp_path / "out" / "plots"}
    [line] = lines
    assert f"cells/{safe_name(escaping['key'])}.json is not a cell record" in line and "kept aside" in line
    assert ResultStore(folder).table()["key"].tolist() == [record()["key"]]


# item 7: two spec files with one stem are two cells


def test_two_spec_files_with_one_stem_are_two_cells_and_shipped_names_keep_their_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    specs = ("vae_toy", "s1/toy.yaml", "s2/toy.yaml")
    config = CampaignConfig(specs=specs, backends=("torch",), modes=("eager",), batch_sizes=(16,))
    keys = [cell.key for cell in plan_cells(config)]
    assert keys[0] == "vae_toy|torch|eager|16|spec|ieee-fp32" and len(set(keys)) == 3
    assert all(key.startswith("toy-") for key in keys[1:])
    monkeypatch.chdir(tmp_path)  # the same key in any working folder (a cell's own process, a Ray worker)
    assert [cell.key for cell in plan_cells(config)] == keys
    store = ResultStore(tmp_path / "F")
    for key in keys:
        store.append({**record(), "key": key})
    assert len(store.records().rows) == 3 and store.recorded(retry_failed=False) == set(keys)


# item 8: report renames only the files it wrote


def test_report_leaves_files_it_did_not_write_alone_and_names_them(tmp_path: Path, victim: Path) -> None:
    project = tmp_path / "proj"
    (project / "cells").mkdir(parents=True)
    (project / "cells" / "package.json").write_text('{"name": "not a record"}\n')
    plant(project / "cells" / "x__a__b__c__d__e.json", victim)
    lines: list[str] = []
    write_report([project], tmp_path / "elsewhere", say=lines.append)
    assert sorted(p.name for p in (project / "cells").iterdir()) == ["package.json", "x__a__b__c__d__e.json"]
    assert victim.read_text() == PRECIOUS
    [line] = lines
    assert "left as they are" in line and "'package.json'" in line and "'x__a__b__c__d__e.json'" in line

    folder = campaign(tmp_path / "F")
    (folder / "cells" / "notes.json").write_text("my notes\n")
    with (folder / "cells.csv").open("a") as table:
        table.write("junk\n")  # the table is rebuilt, the notes stay
    lines.clear()
    write_report([folder], tmp_path / "out", say=lines.append)
    assert (folder / "cells" / "notes.json").read_text() == "my notes\n"
    assert "rebuilt" in lines[0] and "'notes.json'" in lines[0]
