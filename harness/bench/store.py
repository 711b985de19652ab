"""A campaign's results folder: ``cells/<key>.json`` (the truth) and ``cells.csv`` (its table).

Each finished cell writes its full record to ``cells/<key>.json`` (atomically) and then
appends its row to ``cells.csv``. The table is only a view of the records: ``repair()``
checks every line of it against them (a line cut short, replaced by garbage, with extra
fields, a row that differs from its record, a record without a row) and, where they
disagree, rebuilds ``cells.csv`` from the records and keeps the damaged file beside it. A row
whose record is missing is dropped, so that cell runs again on resume.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import pandas as pd

from aebench.errors import AebenchError

LEGACY_COLUMNS = [
    "key",
    "spec",
    "backend",
    "mode",
    "batch_size",
    "dtype",
    "precision",
    "optimizer",
    "status",
    "reason",
    "median_step_ms",
    "iqr_step_ms",
    "cv",
    "samples_per_s",
    "first_call_s",
    "compile_s",
    "steps_per_call",
    "warmup_calls",
    "calls_per_block",
    "blocks",
    "steps_timed",
    "block_step_ms",
    "flops_per_step",
    "gflops_per_s",
    "device_peak_gflops",
    "peak_fraction",
    "peak_memory_mb",
    "memory_source",
    "verified_steps",
    "verify_max_rel_diff",
    "loss_first",
    "loss_last",
    "device",
    "versions",
    "mode_description",
    "threads",
    "data",
    "started",
    "cell_seconds",
]
"""The columns of cells.csv before the peak's provenance was recorded (still read as they are)."""

COLUMNS = [
    *LEGACY_COLUMNS,
    "peak_measured",
    "peak_load",
    "stability",
    "unstable_reason",
    "ci_low_ms",
    "ci_high_ms",
    "ci_level",
    "ci_rel_width",
    "load_end",
    "other_cores",
]
"""The columns of cells.csv; every other field of a row is kept in its record only."""

OLDER_LAYOUTS = (LEGACY_COLUMNS, COLUMNS[: COLUMNS.index("peak_load") + 1])
"""Headers of cells.csv written by earlier aebench versions: read as they are, upgraded before appending."""

MAX_PROBLEM_TEXT = 60  # a key or a garbage line is quoted in a message at most this long


def safe_name(key: str) -> str:
    """A cell key as a file name (no separators)."""
    return key.replace("|", "__").replace("/", "_")


def timestamp() -> str:
    """Now, for the names of files kept aside (sortable, no separators)."""
    return datetime.now().strftime("%Y%m%dT%H%M%S")


def keep_aside(path: Path, what: str) -> Path:
    """Rename ``path`` to ``<name>.<what>-<timestamp>`` (never over an earlier one); the new path."""
    target = path.with_name(f"{path.name}.{what}-{timestamp()}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{what}-{timestamp()}-{n}")
    os.replace(path, target)
    return target


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it over ``path``."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def same_value(text: str, value: object) -> bool:
    """Whether a CSV field says what the record holds (numbers compared as numbers)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return text == ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return text == str(value)
    try:
        parsed = float(text)
    except ValueError:
        return False
    return parsed == value or math.isclose(parsed, value, rel_tol=1e-12)


def quoted(text: str) -> str:
    """A bounded, one-line quotation of untrusted text."""
    shown = text if len(text) <= MAX_PROBLEM_TEXT else text[:MAX_PROBLEM_TEXT] + "..."
    return repr(shown)


@dataclass(frozen=True)
class Records:
    """The records found in cells/: by key, in the order they were written, and the files
    that could not be read as a record."""

    rows: dict[str, dict]
    damaged: tuple[Path, ...] = ()


@dataclass
class ResultStore:
    """results/<campaign>/: cells.csv (a row per finished cell), cells/<key>.json, environment.json."""

    folder: Path

    @property
    def table_path(self) -> Path:
        """cells.csv."""
        return self.folder / "cells.csv"

    @property
    def cells_folder(self) -> Path:
        """cells/, the records."""
        return self.folder / "cells"

    def table(self) -> pd.DataFrame:
        """Every recorded row; a cell recorded twice (a retried failure) keeps its last row."""
        if not self.table_path.is_file():
            return pd.DataFrame(columns=COLUMNS)
        try:
            table = pd.read_csv(self.table_path)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AebenchError(
                f"{self.table_path}: cannot be read ({reason}); `aebench report {self.folder}` rebuilds it from cells/"
            ) from None
        table = table.reindex(columns=COLUMNS)
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)

    def recorded(self, retry_failed: bool) -> set[str]:
        """The keys of the cells recorded (without the failed ones when they are to be retried)."""
        table = self.table()
        if retry_failed:
            table = table[table["status"] != "failed"]
        return set(table["key"])

    def append(self, row: dict) -> None:
        """Write the cell's record, then its row, at once (nothing waits for the campaign's end)."""
        self.cells_folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.record_path(row["key"]), json.dumps(row, indent=1, default=str))
        frame = pd.DataFrame([{c: row.get(c) for c in COLUMNS}], columns=COLUMNS)
        frame.to_csv(self.table_path, mode="a", header=not self.table_path.is_file(), index=False)

    def record_path(self, key: str) -> Path:
        """cells/<key>.json."""
        return self.cells_folder / f"{safe_name(key)}.json"

    def record(self, key: str) -> dict:
        """The full record of one cell."""
        return json.loads(self.record_path(key).read_text())

    def records(self) -> Records:
        """Every readable record in cells/, oldest first (the order their rows were appended)."""
        if not self.cells_folder.is_dir():
            return Records({})
        files = sorted(self.cells_folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name))
        rows, damaged = {}, []
        for path in files:
            row = read_record(path)
            if row is None:
                damaged.append(path)
            else:
                rows[row["key"]] = row
        return Records(rows, tuple(damaged))

    def problems(self, records: Records) -> list[str]:
        """What is wrong with cells.csv against the records, one short phrase each ([] when it agrees)."""
        problems = [f"cells/{path.name} is not a cell record" for path in records.damaged]
        if not self.table_path.is_file():
            return problems + ([f"cells.csv is missing ({len(records.rows)} records)"] if records.rows else [])
        try:
            with open(self.table_path, newline="", errors="replace") as handle:
                lines = list(csv.reader(handle))
        except csv.Error as exc:
            return [*problems, f"cells.csv cannot be parsed ({str(exc)[:100]})"]
        return problems + table_problems(lines, records.rows)

    def has_legacy_layout(self) -> bool:
        """cells.csv was written by an aebench with fewer columns (read as it is, upgraded before appending)."""
        if not self.table_path.is_file():
            return False
        with open(self.table_path, newline="", errors="replace") as handle:
            header = next(csv.reader(handle), [])
        return header in OLDER_LAYOUTS

    def repair(self, upgrade_layout: bool = False) -> str:
        """Make cells.csv agree with the records; one line saying what was done ("" when nothing was).

        A damaged table is rebuilt from the records and kept as ``cells.csv.damaged-<time>``;
        unreadable record files are kept aside as ``<name>.damaged-<time>`` (their cells run
        again). ``upgrade_layout`` rewrites a table of the older column layout with the
        current columns (before a campaign appends to it)."""
        records = self.records()
        problems = self.problems(records)
        if problems:
            return self._rebuild(records, problems)
        if upgrade_layout and self.has_legacy_layout():
            return f"{self.table_path}: added the columns {', '.join(self._upgrade_layout())} (older layout)"
        return ""

    def _rebuild(self, records: Records, problems: list[str]) -> str:
        kept = [keep_aside(path, "damaged").name for path in records.damaged]
        backup = keep_aside(self.table_path, "damaged").name if self.table_path.is_file() else ""
        self.write_table(list(records.rows.values()))
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        saved = f"; the damaged table is kept as {backup}" if backup else ""
        aside = f"; unreadable records kept aside as cells/{', cells/'.join(kept)}" if kept else ""
        return (
            f"{self.table_path} did not match the cell records: {problems[0]}{more}; rebuilt from the "
            f"{len(records.rows)} records in cells/{saved}{aside}; a cell without a record runs again on resume"
        )

    def write_table(self, rows: list[dict]) -> None:
        """cells.csv holding exactly ``rows``, written atomically."""
        frame = pd.DataFrame([{c: row.get(c) for c in COLUMNS} for row in rows], columns=COLUMNS)
        write_atomically(self.table_path, frame.to_csv(index=False))

    def _upgrade_layout(self) -> list[str]:
        """Rewrite an older table with the current columns; the columns added."""
        with open(self.table_path, newline="") as handle:
            lines = list(csv.reader(handle))
        added = COLUMNS[len(lines[0]) :]
        extra = [""] * len(added)
        tmp = self.table_path.with_name(f".{self.table_path.name}.tmp")
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(line + extra for line in lines[1:])
        os.replace(tmp, self.table_path)
        return added


def read_record(path: Path) -> Optional[dict]:
    """A cell record, or None when the file is not one (unparseable, no key, or another cell's name)."""
    try:
        row = json.loads(path.read_text(errors="replace"))
    except (ValueError, OSError):
        return None
    if not isinstance(row, dict) or not isinstance(row.get("key"), str) or "status" not in row:
        return None
    return row if path.name == f"{safe_name(row['key'])}.json" else None


def table_problems(lines: list[list[str]], records: dict[str, dict]) -> list[str]:
    """Every disagreement of a parsed cells.csv (header first) with the records. Earlier rows of a
    key recorded twice (a retried cell) are history; the last row of each key must match its record."""
    if not lines:
        return ["cells.csv is empty"] if records else []
    header, rows = lines[0], lines[1:]
    if header != COLUMNS and header not in OLDER_LAYOUTS:
        return [f"line 1 is not the header of cells.csv: {quoted(','.join(header))}"]
    problems, last_line = [], {}
    for number, fields in enumerate(rows, start=2):
        if len(fields) != len(header):
            problems.append(f"line {number} has {len(fields)} fields, not {len(header)}: {quoted(','.join(fields))}")
        elif fields[0] not in records:
            problems.append(f"line {number}: no record in cells/ for the key {quoted(fields[0])}")
        else:
            last_line[fields[0]] = (number, fields)
    for key, (number, fields) in last_line.items():
        differing = [c for c, text in zip(header, fields) if not same_value(text, records[key].get(c))]
        if differing:
            problems.append(f"line {number} ({key}) differs from its record in {', '.join(differing[:3])}")
    problems += [f"no row for the record of {key}" for key in records if key not in last_line]
    return problems
