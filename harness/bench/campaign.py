"""A benchmark campaign: specs x backends x modes x batch sizes, one fresh process per cell.

This module plans cells and keeps the results; running a cell is an Executor's job
(``LocalExecutor``: one subprocess at a time; a cluster executor only needs ``run(cell)``).
Every cell's row is appended to ``results/<campaign>/cells.csv`` the moment it finishes,
with its full record (losses, traceback) in ``cells/<key>.json``; a campaign started again
with the same name skips the cells already recorded, so a killed campaign resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional
from typing import Protocol as TypingProtocol

import pandas as pd

from aebench.bench.cell import Cell, failure_reason
from aebench.bench.timing import Protocol
from aebench.environment import environment_info
from aebench.errors import AebenchError, SpecError
from aebench.plugins.bench_api import Precision
from aebench.plugins.discovery import child_environment
from aebench.plugins.registry import list_backends
from aebench.spec.load import load_spec, spec_path
from aebench.spec.schema import Parser, at_least, did_you_mean, greater_than, rule
from aebench.spec.yamlio import read_mapping

Mode = Literal["eager", "compiled", "fast"]
Dtype = Literal["float32", "float64"]

COLUMNS = [
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


@dataclass(frozen=True)
class CampaignConfig:
    """A campaign as a YAML file or flags describe it. ``batch_sizes`` empty: each spec's own."""

    specs: tuple[str, ...]
    backends: tuple[str, ...]
    modes: tuple[Mode, ...] = ("eager", "compiled", "fast")
    batch_sizes: tuple[int, ...] = ()
    name: Optional[str] = None
    dtype: Optional[Dtype] = None
    tf32: bool = False
    steps_per_call: int = field(default=10, metadata=rule(at_least(1)))
    timeout_s: float = field(default=1800.0, metadata=rule(greater_than(0)))
    verify: bool = True
    protocol: Protocol = field(default_factory=Protocol)
    executor: Literal["local", "ray"] = "local"
    ray_address: Optional[str] = None

    @property
    def precision(self) -> Precision:
        """The precision policy every cell of the campaign runs under (the YAML says tf32: true|false)."""
        return Precision(tf32=self.tf32)

    def campaign_name(self) -> str:
        """The given name, or one derived from what is measured (the same command resumes)."""
        if self.name:
            return self.name
        what = json.dumps([self.specs, self.backends, self.modes, self.batch_sizes, self.dtype, self.tf32])
        return "bench-" + hashlib.sha256(what.encode()).hexdigest()[:8]


def load_campaign(path: Path) -> CampaignConfig:
    """A campaign YAML; SpecError (file, field, what is allowed) on anything wrong."""
    parser = Parser(str(path))
    raw = read_mapping(path)
    config = parser.parse_dataclass(CampaignConfig, raw, "")
    for i, size in enumerate(config.batch_sizes):
        if size < 1:
            parser.fail(f"batch_sizes[{i}]", f"must be >= 1, got {size}")
    return validate(config, str(path))


def validate(config: CampaignConfig, source: str) -> CampaignConfig:
    """Refuse unknown spec and backend names up front (a typo should not cost a campaign)."""
    known = [info.name for info in list_backends()]
    for i, name in enumerate(config.backends):
        if name not in known:
            raise SpecError(
                source,
                f"backends[{i}]",
                f"no backend '{name}'{did_you_mean(name, known)}; registered: {', '.join(known)}",
            )
    for i, name in enumerate(config.specs):
        try:
            spec_path(name)
        except SpecError as exc:
            raise SpecError(source, f"specs[{i}]", exc.message) from None
    for what in ("specs", "backends", "modes"):
        if not getattr(config, what):
            raise SpecError(source, what, "must name at least one")
    return config


def plan_cells(config: CampaignConfig, mnist: Optional[str] = None) -> list[Cell]:
    """Every cell of the campaign, spec by spec, backend by backend, mode by mode."""
    cells = []
    for spec in config.specs:
        for batch_size in config.batch_sizes or (own_batch_size(spec),):
            for backend in config.backends:
                for mode in config.modes:
                    cells.append(
                        Cell(
                            spec=spec,
                            backend=backend,
                            mode=mode,
                            batch_size=batch_size,
                            dtype=config.dtype,
                            precision=config.precision,
                            steps_per_call=config.steps_per_call,
                            verify=config.verify,
                            mnist=mnist,
                            protocol=config.protocol,
                        )
                    )
    return cells


def own_batch_size(spec: str) -> int:
    """The spec's train.batch_size; 0 when the spec does not load (its cells then fail with why)."""
    try:
        return load_spec(spec).train.batch_size
    except AebenchError:
        return 0


class Executor(TypingProtocol):
    def run_all(self, cells: Iterable[Cell], may_start: Callable[[], bool]) -> Iterator[tuple[Cell, dict]]:
        """Measure each cell in a fresh process; (cell, row) as each finishes, failures
        included. A cell is started only while ``may_start()`` is true."""


@dataclass
class LocalExecutor:
    """Runs each cell in a fresh ``python -m aebench.bench.cell`` on this machine, one at a time;
    its output goes to ``logs/<key>.log`` in the campaign folder."""

    logs: Path
    timeout_s: float

    def run_all(self, cells: Iterable[Cell], may_start: Callable[[], bool]) -> Iterator[tuple[Cell, dict]]:
        """One cell after the other; an error of the executor itself is that cell's failed row."""
        for cell in cells:
            if not may_start():
                return
            try:
                row = self.run(cell)
            except Exception as exc:  # noqa: BLE001 - an executor failure is this cell's result
                row = failed_row(cell, failure_reason(exc))
            yield cell, row

    def run(self, cell: Cell) -> dict:
        """One cell in a fresh process: its row, or a failed row saying why there is none."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="aebench-cell-") as tmp:
            cell_file, result_file = Path(tmp) / "cell.json", Path(tmp) / "result.json"
            cell_file.write_text(cell.to_json())
            log_path = self.logs / f"{safe_name(cell.key)}.log"
            failure = self._run_process(cell_file, result_file, log_path)
            if result_file.is_file():
                return json.loads(result_file.read_text())
        return failed_row(cell, failure or "the cell process wrote no result", log_path)

    def _run_process(self, cell_file: Path, result_file: Path, log_path: Path) -> str:
        command = [sys.executable, "-m", "aebench.bench.cell", str(cell_file), str(result_file)]
        with open(log_path, "w") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=child_environment()
            )
            try:
                code = process.wait(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                return f"timed out after {self.timeout_s:g} s"
        if code == 0:
            return ""
        return f"the cell process {exit_description(code)}: {last_line(log_path)}"


def exit_description(code: int) -> str:
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"died of {name}{hint}"
    return f"exited with code {code}"


def last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def failed_row(cell: Cell, reason: str, log_path: Optional[Path] = None) -> dict:
    reason = f"out of memory: {reason}" if "out of memory" not in reason and "SIGKILL" in reason else reason
    row = {
        **cell.row_identity(),
        "dtype": cell.dtype,
        "status": "failed",
        "reason": reason,
    }
    if log_path is not None:
        row["log"] = str(log_path)
    return row


def safe_name(key: str) -> str:
    return key.replace("|", "__").replace("/", "_")


@dataclass
class ResultStore:
    """results/<campaign>/: cells.csv (a row per finished cell), cells/<key>.json, environment.json."""

    folder: Path

    @property
    def table_path(self) -> Path:
        return self.folder / "cells.csv"

    def table(self) -> pd.DataFrame:
        """Every recorded row; a cell recorded twice (a retried failure) keeps its last row."""
        if not self.table_path.is_file():
            return pd.DataFrame(columns=COLUMNS)
        table = pd.read_csv(self.table_path)
        return table.drop_duplicates("key", keep="last").reset_index(drop=True)

    def recorded(self, retry_failed: bool) -> set[str]:
        table = self.table()
        if retry_failed:
            table = table[table["status"] != "failed"]
        return set(table["key"])

    def append(self, row: dict) -> None:
        """Write the cell's record, then its row, at once (nothing waits for the campaign's end)."""
        (self.folder / "cells").mkdir(parents=True, exist_ok=True)
        record = self.folder / "cells" / f"{safe_name(row['key'])}.json"
        record.write_text(json.dumps(row, indent=1, default=str))
        frame = pd.DataFrame([{c: row.get(c) for c in COLUMNS}], columns=COLUMNS)
        frame.to_csv(self.table_path, mode="a", header=not self.table_path.is_file(), index=False)

    def record(self, key: str) -> dict:
        return json.loads((self.folder / "cells" / f"{safe_name(key)}.json").read_text())


class CellTracker(TypingProtocol):
    def __call__(self, row: dict, cell: Cell, campaign_folder: Path) -> str:
        """Record one stored cell elsewhere (an MLflow run); one line on what became of it."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count`` of a campaign's cells, for one machine of several:
    cell k of the plan belongs to shard (k mod count) + 1, so the shards are disjoint, cover
    the plan, and mix specs and backends alike."""

    index: int = 1
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' with 1 <= I <= N; AebenchError naming the flag otherwise."""
        left, _, right = text.partition("/")
        if not (left.isdigit() and right.isdigit() and 1 <= int(left) <= int(right)):
            raise AebenchError(f"--shard: must be I/N with 1 <= I <= N (e.g. 2/3), got {text!r}")
        return cls(int(left), int(right))

    def select(self, cells: list[Cell]) -> list[Cell]:
        return [cell for k, cell in enumerate(cells) if k % self.count == self.index - 1]


@dataclass(frozen=True)
class Budget:
    """No new cell starts once ``max_seconds`` have passed since ``start`` (None: no limit);
    a cell already running finishes (or meets its own timeout)."""

    max_seconds: Optional[float] = None
    start: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        return self.max_seconds is not None and time.monotonic() - self.start >= self.max_seconds


def run_campaign(
    config: CampaignConfig,
    results_root: Path,
    executor: Optional[Executor] = None,
    retry_failed: bool = False,
    mnist: Optional[str] = None,
    tracker: Optional[CellTracker] = None,
    on_cell: Callable[[int, int, dict, str], None] = lambda i, n, row, note: None,
    shard: Shard = Shard(),
    budget: Optional[Budget] = None,
) -> ResultStore:
    """Run every cell of this shard not yet recorded, until the budget is spent. Writes
    environment.json first. Running it again resumes: recorded cells are skipped.

    Each row is stored before it is tracked, so a tracking failure cannot lose a result;
    ``on_cell`` gets the row and the tracker's line ("" without a tracker).
    """
    budget = budget or Budget()
    store = ResultStore(results_root / config.campaign_name())
    store.folder.mkdir(parents=True, exist_ok=True)
    write_environment(store.folder / "environment.json", config)
    executor = executor or LocalExecutor(store.folder / "logs", config.timeout_s)
    done = store.recorded(retry_failed)
    todo = [cell for cell in shard.select(plan_cells(config, mnist)) if cell.key not in done]
    for i, (cell, row) in enumerate(executor.run_all(todo, lambda: not budget.spent()), 1):
        store.append(row)
        on_cell(i, len(todo), row, track(tracker, row, cell, store.folder))
    return store


def cells_left(config: CampaignConfig, store: ResultStore, shard: Shard = Shard()) -> list[Cell]:
    """The shard's planned cells not yet recorded in the store (what a resumed run would do)."""
    done = store.recorded(retry_failed=False)
    return [cell for cell in shard.select(plan_cells(config)) if cell.key not in done]


def track(tracker: Optional[CellTracker], row: dict, cell: Cell, folder: Path) -> str:
    """The tracker's line for one stored cell; never raises (the row is already safe)."""
    if tracker is None:
        return ""
    try:
        return tracker(row, cell, folder)
    except Exception as exc:  # noqa: BLE001 - the row is stored; tracking must not stop the campaign
        return f"MLflow: not recorded ({failure_reason(exc)})"


def write_environment(path: Path, config: CampaignConfig) -> None:
    """The host's environment and the campaign's settings; each cell's row adds its backend's
    framework versions, device and thread pools."""
    payload = {"campaign": config.campaign_name(), "config": asdict(config), **environment_info()}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def with_overrides(config: CampaignConfig, **changes) -> CampaignConfig:
    """The config with the given fields replaced (None leaves a field as it is)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
