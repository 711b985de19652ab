"""Result folders from several machines (shards of one campaign, or campaigns run apart) as one.

``merge_results(sources, out)`` copies every cell record (``cells/<key>.json``, the truth)
into ``out`` and rebuilds ``out/cells.csv`` from them; each source's environment.json is
kept as ``environments/<source>.json`` (a merged campaign ran on several machines), and its
logs and MLflow bundles are copied beside. A key recorded in two sources keeps the record
that finished last, preferring a measured cell to a failed one; every such choice is
returned, so the caller can say what it did.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from aebench.bench.store import ResultStore, safe_name, write_atomically
from aebench.errors import AebenchError

STATUS_RANK = {"ok": 2, "unsupported": 1, "failed": 0}


@dataclass(frozen=True)
class Conflict:
    """A key recorded in more than one source, and the source whose record was kept."""

    key: str
    kept: str
    dropped: tuple[str, ...]


def merge_results(sources: list[Path], out: Path) -> tuple[ResultStore, list[Conflict]]:
    """One result folder at ``out`` holding every cell of ``sources``; returns it and the conflicts."""
    records = {source: _records(source) for source in sources}
    chosen: dict[str, tuple[Path, dict]] = {}
    seen: dict[str, list[Path]] = {}
    for source, rows in records.items():
        for row in rows:
            seen.setdefault(row["key"], []).append(source)
            if row["key"] not in chosen or _better(row, chosen[row["key"]][1]):
                chosen[row["key"]] = (source, row)
    store = ResultStore(out)
    store.cells_folder.mkdir(parents=True, exist_ok=True)
    for key, (_, row) in chosen.items():
        write_atomically(store.record_path(key), json.dumps(row, indent=1, default=str))
    store.write_table([row for _, row in chosen.values()])
    for source in sources:
        _copy_beside(source, out)
    conflicts = [
        Conflict(key, str(chosen[key][0]), tuple(str(s) for s in where if s != chosen[key][0]))
        for key, where in seen.items()
        if len(where) > 1
    ]
    return store, conflicts


def _records(source: Path) -> list[dict]:
    folder = source / "cells"
    if not folder.is_dir():
        raise AebenchError(f"{source}: no cells/ folder here; give result folders written by aebench bench")
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def _better(row: dict, kept: dict) -> bool:
    """A measured record beats a failed one; between equals, the later start wins."""
    rank, kept_rank = STATUS_RANK.get(row["status"], 0), STATUS_RANK.get(kept["status"], 0)
    if rank != kept_rank:
        return rank > kept_rank
    return str(row.get("started", "")) > str(kept.get("started", ""))


def _copy_beside(source: Path, out: Path) -> None:
    """The source's environment, logs and MLflow bundles, kept apart by source name."""
    name = safe_name(source.resolve().name)
    environment = source / "environment.json"
    if environment.is_file():
        (out / "environments").mkdir(exist_ok=True)
        shutil.copy2(environment, out / "environments" / f"{name}.json")
        if not (out / "environment.json").exists():
            shutil.copy2(environment, out / "environment.json")
    for sub in ("logs", "mlflow"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, out / sub / name, dirs_exist_ok=True)
