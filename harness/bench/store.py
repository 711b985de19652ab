"""A campaign's results folder: ``cells/<key>.json`` (the truth) and ``cells.csv`` (its table).

Each finished cell writes its full record to ``cells/<key>.json`` (atomically) and then
appends its row to ``cells.csv``. The table is only a view of the records: ``repair()``
checks every line of it against them (a line cut short, replaced by garbage, with extra
fields, a row that differs from its record, a record without a row) and, where they
disagree, rebuilds ``cells.csv`` from the records and keeps the damaged file beside it. A row
whose record is missing is dropped, so that cell runs again on resume.

The folder may be shared, so nothing here follows a link (aebench.safe_files): a link where
the campaign keeps its own file or folder (cells.csv, cells/, logs/, mlflow/, tmp/,
environment.json, campaign.lock) is one error line naming it; records and tables are written
to exclusively made temporary files and renamed into place. A file in cells/ that is neither a
record nor named like one (another program's file, a link, a folder) is foreign: never read,
never renamed, only named. A record whose naming fields are not names (``is_name``: they end
up in file names) counts as damaged.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Optional

import pandas as pd

from aebench.bench.lock import LOCK_NAME
from aebench.errors import AebenchError
from aebench.safe_files import (
    is_name,
    open_own,
    own_folder,
    read_json,
    read_text,
    refuse_link,
    refuse_links,
    write_text,
)

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

TEXT_COLUMNS = frozenset(
    "key spec backend mode dtype precision optimizer status reason block_step_ms memory_source device versions "
    "mode_description threads data started peak_measured stability unstable_reason".split()
)
NUMBER_COLUMNS = [c for c in COLUMNS if c not in TEXT_COLUMNS]
"""The columns of cells.csv that hold numbers."""

OLDER_LAYOUTS = (LEGACY_COLUMNS, COLUMNS[: COLUMNS.index("peak_load") + 1])
"""Headers of cells.csv written by earlier aebench versions: read as they are, upgraded before appending."""

MAX_PROBLEM_TEXT = 60  # a key or a garbage line is quoted in a message at most this long
LOGS_FOLDER, BUNDLES_FOLDER, EXCHANGE_FOLDER = "logs", "mlflow", "tmp"
ENVIRONMENT_FILE = "environment.json"
OWN_ENTRIES = ("cells.csv", "cells", ENVIRONMENT_FILE, LOCK_NAME, LOGS_FOLDER, BUNDLES_FOLDER, EXCHANGE_FOLDER)
"""What aebench keeps in a campaign folder: none of them may be a link."""
KEY_FIELDS = 6  # spec|backend|mode|batch size|dtype|precision
NAME_FIELDS = ("spec", "backend", "mode", "precision")


def safe_name(key: str) -> str:
    """A cell key as a file name (no separators)."""
    return key.replace("|", "__").replace("/", "_")


def timestamp() -> str:
    """Now, for the names of files kept aside (sortable, no separators)."""
    return datetime.now().strftime("%Y%m%dT%H%M%S")


def keep_aside(path: Path, what: str) -> Path:
    """Rename aebench's own file ``path`` to ``<name>.<what>-<timestamp>`` (never over an
    earlier one, nor over a link); the new path. AebenchError when ``path`` is a link."""
    refuse_link(path)
    target = path.with_name(f"{path.name}.{what}-{timestamp()}")
    n = 1
    while os.path.lexists(target):
        n += 1
        target = path.with_name(f"{path.name}.{what}-{timestamp()}-{n}")
    os.replace(path, target)
    return target


def is_record_name(name: str) -> bool:
    """Whether a file name in cells/ is one aebench gives a record (``safe_name(key).json``:
    six fields joined by ``__``); any other file there is another program's."""
    return name.endswith(".json") and len(name[: -len(".json")].split("__")) >= KEY_FIELDS


def naming_problem(row: dict) -> str:
    """Why a record's naming fields (key, spec, backend, mode, batch size, dtype, precision),
    which end up in file names, are not names; "" when they are."""
    if not isinstance(row.get("key"), str) or "status" not in row:
        return "no key or status"
    bad = [f for f in NAME_FIELDS if not is_name(row.get(f))]
    bad += [] if row.get("dtype") is None or is_name(row.get("dtype")) else ["dtype"]
    batch = row.get("batch_size")
    bad += [] if isinstance(batch, int) and not isinstance(batch, bool) else ["batch_size"]
    return f"{', '.join(bad)} not a name" if bad else ""


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
    """The records found in cells/: by key, in the order they were written; the files named
    like records that could not be read as one (``damaged``: kept aside on repair); and the
    entries that are not aebench's (``foreign``: links, folders, other files; left alone)."""

    rows: dict[str, dict]
    damaged: tuple[Path, ...] = ()
    foreign: tuple[Path, ...] = ()

    def foreign_note(self) -> str:
        """One line naming the foreign entries of cells/ ("" when there are none)."""
        if not self.foreign:
            return ""
        names = ", ".join(quoted(path.name) for path in self.foreign[:3])
        more = f" and {len(self.foreign) - 3} more" if len(self.foreign) > 3 else ""
        return (
            f"{self.foreign[0].parent}: left as they are, not cell records aebench wrote "
            f"(a link, a folder or another program's file): {names}{more}"
        )


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

    def check_links(self) -> None:
        """AebenchError naming the first link where the campaign keeps its own file or folder."""
        refuse_links(self.folder, OWN_ENTRIES)

    def table_text(self) -> Optional[str]:
        """cells.csv as text (None when there is none), read as safe_files.read_text: never through
        a link, at most MAX_READ_BYTES; a link, a FIFO, a device or a folder there is one line."""
        try:
            return read_text(self.table_path)
        except FileNotFoundError:
            return None

    def table(self) -> pd.DataFrame:
        """Every recorded row; a cell recorded twice (a retried failure) keeps its last row."""
        text = self.table_text()
        if text is None:
            return pd.DataFrame(columns=COLUMNS)
        try:
            table = pd.read_csv(io.StringIO(text))
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AebenchError(
                f"{self.table_path}: cannot be read ({reason}); `aebench report {self.folder}` rebuilds it from cells/"
            ) from None
        table = table.reindex(columns=COLUMNS)
        for column in NUMBER_COLUMNS:  # text in a number field (an edited table) reads as missing
            table[column] = pd.to_numeric(table[column], errors="coerce")
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)

    def recorded(self, retry_failed: bool) -> set[str]:
        """The keys of the cells recorded (without the failed ones when they are to be retried)."""
        table = self.table()
        if retry_failed:
            table = table[table["status"] != "failed"]
        return set(table["key"])

    def append(self, row: dict) -> None:
        """Write the cell's record, then its row, at once (nothing waits for the campaign's end);
        the row is appended to cells.csv in place, never through a link."""
        own_folder(self.cells_folder)
        write_text(self.record_path(row["key"]), json.dumps(row, indent=1, default=str))
        frame = pd.DataFrame([{c: row.get(c) for c in COLUMNS}], columns=COLUMNS)
        fd = open_own(self.table_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        with os.fdopen(fd, "w", newline="") as handle:
            frame.to_csv(handle, header=os.fstat(fd).st_size == 0, index=False)

    def record_path(self, key: str) -> Path:
        """cells/<key>.json."""
        return self.cells_folder / f"{safe_name(key)}.json"

    def record(self, key: str) -> dict:
        """The full record of one cell (never read through a link)."""
        return read_json(self.record_path(key))

    def records(self) -> Records:
        """Every readable record in cells/, oldest first (the order their rows were appended), and
        the files there that are damaged records or foreign (see Records). AebenchError first when
        a link stands where the campaign keeps its own file or folder (check_links)."""
        self.check_links()
        if not self.cells_folder.is_dir():
            return Records({})
        entries = sorted(self.cells_folder.glob("*.json"), key=lambda p: (p.lstat().st_mtime_ns, p.name))
        rows, damaged, foreign = {}, [], []
        for path in entries:
            if path.is_symlink() or not path.is_file() or not is_record_name(path.name):
                foreign.append(path)
            elif (row := read_record(path)) is None:
                damaged.append(path)
            else:
                rows[row["key"]] = row
        return Records(rows, tuple(damaged), tuple(foreign))

    def problems(self, records: Records) -> list[str]:
        """What is wrong with cells.csv against the records, one short phrase each ([] when it
        agrees); foreign files in cells/ are not a problem of the table."""
        problems = [f"cells/{path.name} is not a cell record" for path in records.damaged]
        text = self.table_text()
        if text is None:
            return problems + ([f"cells.csv is missing ({len(records.rows)} records)"] if records.rows else [])
        try:
            lines = csv_lines(text)
        except csv.Error as exc:
            return [*problems, f"cells.csv cannot be parsed ({str(exc)[:100]})"]
        return problems + table_problems(lines, records.rows)

    def has_legacy_layout(self) -> bool:
        """cells.csv was written by an aebench with fewer columns (read as it is, upgraded before appending)."""
        text = self.table_text()
        return text is not None and next(iter(csv_lines(text)), []) in OLDER_LAYOUTS

    def repair(self, upgrade_layout: bool = False) -> str:
        """Make cells.csv agree with the records; one line saying what was done ("" when nothing was).

        A damaged table is rebuilt from the records and kept as ``cells.csv.damaged-<time>``;
        unreadable record files are kept aside as ``<name>.damaged-<time>`` (their cells run
        again); foreign files in cells/ are left as they are and named. ``upgrade_layout``
        rewrites a table of the older column layout with the current columns (before a
        campaign appends to it)."""
        records = self.records()
        problems = self.problems(records)
        if problems:
            line = self._rebuild(records, problems)
        elif upgrade_layout and self.has_legacy_layout():
            line = f"{self.table_path}: added the columns {', '.join(self._upgrade_layout())} (older layout)"
        else:
            line = ""
        return "; ".join(part for part in (line, records.foreign_note()) if part)

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
        write_text(self.table_path, frame.to_csv(index=False))

    def _upgrade_layout(self) -> list[str]:
        """Rewrite an older table with the current columns; the columns added."""
        lines = csv_lines(self.table_text() or "")
        added = COLUMNS[len(lines[0]) :]
        extra = [""] * len(added)
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(line + extra for line in lines[1:])
        write_text(self.table_path, text.getvalue())
        return added


def csv_lines(text: str) -> list[list[str]]:
    """The parsed lines of a CSV text (csv.Error where it cannot be parsed)."""
    return list(csv.reader(io.StringIO(text, newline="")))


def read_record(path: Path) -> Optional[dict]:
    """A cell record, or None when the file is not one (unparseable, a link, no key, naming
    fields that are not names, or another cell's name)."""
    try:
        row = read_json(path)
    except (ValueError, OSError, AebenchError):
        return None
    if not isinstance(row, dict) or naming_problem(row):
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
