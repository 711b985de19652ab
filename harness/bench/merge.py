"""Result folders from several machines (shards of one campaign, or campaigns run apart) as one.

``merge_results(sources, out)`` copies every cell record (``cells/<key>.json``, the truth)
into ``out`` and rebuilds ``out/cells.csv`` from them; each source's environment.json is
kept as ``environments/<source>.json`` (a merged campaign ran on several machines), and its
logs and MLflow bundles are copied beside. A key recorded in two sources keeps the record
that finished last, preferring a measured cell to a failed one; every such choice is
returned, so the caller can say what it did.

Only a source's own regular files are copied: a link anywhere in a source (cells/, logs/,
mlflow/, environment.json), a FIFO or a device, or a file in cells/ that is not a readable
record, is one error line naming it, before anything is written; nothing in ``out`` is
written through a link (aebench.safe_files).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from aebench.bench.store import BUNDLES_FOLDER, ENVIRONMENT_FILE, LOGS_FOLDER, ResultStore, safe_name
from aebench.errors import AebenchError
from aebench.safe_files import copy_file, link_refused, own_folder, own_folders, write_text

STATUS_RANK = {"ok": 2, "unsupported": 1, "failed": 0}
COPIED_FOLDERS = (LOGS_FOLDER, BUNDLES_FOLDER)


@dataclass(frozen=True)
class Conflict:
    """A key recorded in more than one source, and the source whose record was kept."""

    key: str
    kept: str
    dropped: tuple[str, ...]


def merge_results(sources: list[Path], out: Path) -> tuple[ResultStore, list[Conflict]]:
    """One result folder at ``out`` holding every cell of ``sources``; returns it and the conflicts.
    AebenchError, before anything is written, for a link or a foreign file in a source."""
    records = {source: _records(source) for source in sources}
    trees = {source: {sub: _tree(source / sub) for sub in COPIED_FOLDERS} for source in sources}
    chosen: dict[str, tuple[Path, dict]] = {}
    seen: dict[str, list[Path]] = {}
    for source, rows in records.items():
        for row in rows:
            seen.setdefault(row["key"], []).append(source)
            if row["key"] not in chosen or _better(row, chosen[row["key"]][1]):
                chosen[row["key"]] = (source, row)
    store = ResultStore(out)
    store.check_links()
    own_folder(store.cells_folder)
    for key, (_, row) in chosen.items():
        write_text(store.record_path(key), json.dumps(row, indent=1, default=str))
    store.write_table([row for _, row in chosen.values()])
    for source in sources:
        _copy_beside(source, out, trees[source])
    conflicts = [
        Conflict(key, str(chosen[key][0]), tuple(str(s) for s in where if s != chosen[key][0]))
        for key, where in seen.items()
        if len(where) > 1
    ]
    return store, conflicts


def _records(source: Path) -> list[dict]:
    """The records of a source; AebenchError naming a link or a file in cells/ that is not one."""
    store = ResultStore(source)
    if not store.cells_folder.is_dir():
        raise AebenchError(f"{source}: no cells/ folder here; give result folders written by aebench bench")
    records = store.records()
    odd = records.damaged + records.foreign
    if odd:
        raise AebenchError(
            f"{odd[0]}: not a cell record (a link, a folder, another program's file or a damaged record); "
            f"merge copies records only: remove it, or run `aebench report {source}` to set damaged records aside"
        )
    return list(records.rows.values())


def _better(row: dict, kept: dict) -> bool:
    """A measured record beats a failed one; between equals, the later start wins."""
    rank, kept_rank = STATUS_RANK.get(row["status"], 0), STATUS_RANK.get(kept["status"], 0)
    if rank != kept_rank:
        return rank > kept_rank
    return str(row.get("started", "")) > str(kept.get("started", ""))


def _tree(folder: Path) -> list[tuple[Path, bool]]:
    """Every entry below ``folder`` as (path relative to it, whether a folder), parents first
    ([] when there is no such folder); AebenchError naming the first link (never entered: a
    link to a folder, or ``up -> ..``) or entry that is neither a regular file nor a folder."""
    entries = []
    for root, folders, files in os.walk(folder):
        for name in sorted(folders) + sorted(files):
            path = Path(root) / name
            if path.is_symlink():
                raise link_refused(path)
            if not (path.is_dir() or path.is_file()):
                raise AebenchError(f"{path}: is neither a regular file nor a folder; merge copies only those")
            entries.append((path.relative_to(folder), path.is_dir()))
    return entries


def _copy_beside(source: Path, out: Path, trees: dict[str, list[tuple[Path, bool]]]) -> None:
    """The source's environment, logs and MLflow bundles (``trees``: their entries, from _tree),
    kept apart by source name."""
    name = safe_name(source.resolve().name)
    environment = source / ENVIRONMENT_FILE
    if environment.is_file():
        copy_file(environment, own_folder(out / "environments") / f"{name}.json")
        if not os.path.lexists(out / ENVIRONMENT_FILE):
            copy_file(environment, out / ENVIRONMENT_FILE)
    for sub, entries in trees.items():
        if (source / sub).is_dir():
            target = own_folders(out, Path(sub) / name)
            for relative, is_folder in entries:
                if is_folder:
                    own_folders(target, relative)
                else:
                    copy_file(source / sub / relative, target / relative)
