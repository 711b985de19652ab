"""A benchmark campaign: specs x backends x modes x batch sizes, one fresh process per cell.

This module plans cells and runs them; running a cell is an Executor's job
(``aebench.bench.executor.LocalExecutor``: one subprocess at a time; a cluster executor only
needs ``run_all``), keeping the results the ResultStore's (``aebench.bench.store``). Every
cell's record is written to ``<results>/<campaign>/cells/<key>.json`` and its row appended
to ``cells.csv`` the moment it finishes; a campaign started again with the same name skips
the cells already recorded, so a killed campaign resumes. One campaign at a time runs in a
folder (``aebench.bench.lock``).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal, Optional
from typing import Protocol as TypingProtocol

from aebench.bench.cell import Cell, failure_reason
from aebench.bench.executor import Executor, LocalExecutor, clear_exchange
from aebench.bench.identity import changed_cells, refuse_changed
from aebench.bench.lock import campaign_lock
from aebench.bench.store import ResultStore
from aebench.bench.timing import Protocol
from aebench.environment import environment_info
from aebench.errors import AebenchError, SpecError
from aebench.plugins.bench_api import MODE_NAMES, PRECISION_NAMES, Precision
from aebench.plugins.discovery import registered_plugins
from aebench.safe_files import own_folders, write_text
from aebench.spec.load import load_spec, spec_path
from aebench.spec.schema import Parser, at_least, did_you_mean, greater_than, rule
from aebench.spec.yamlio import read_mapping

NAME_LIMIT = 80  # a derived campaign name longer than this ends in a hash of what is measured
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")

Mode = Literal["eager", "compiled", "fast"]
Dtype = Literal["float32", "float64"]


@dataclass(frozen=True)
class CampaignConfig:
    """A campaign as a YAML file or flags describe it. ``batch_sizes`` empty: each spec's own.
    ``precision``: the precision every cell's process runs at (YAML ``precision: tf32``; the
    older ``tf32: true|false`` is still read, load_campaign)."""

    specs: tuple[str, ...]
    backends: tuple[str, ...]
    modes: tuple[Mode, ...] = ("eager", "compiled", "fast")
    batch_sizes: tuple[int, ...] = ()
    name: Optional[str] = None
    dtype: Optional[Dtype] = None
    precision: Precision = field(default_factory=Precision)
    steps_per_call: int = field(default=10, metadata=rule(at_least(1)))
    timeout_s: float = field(default=1800.0, metadata=rule(greater_than(0)))
    verify: bool = True
    protocol: Protocol = field(default_factory=Protocol)
    executor: Literal["local", "ray"] = "local"
    ray_address: Optional[str] = None

    @property
    def tf32(self) -> bool:
        """Whether the campaign allows TF32 (its name says so; its hash reads this bool, as it
        did when it was a field)."""
        return self.precision.tf32

    def campaign_name(self) -> str:
        """The given name, or one read from what is measured, e.g.
        ``vae_dense-vae_conv_torch-jax_compiled-fast_b1024`` (specs, backends, modes, then batch
        sizes, dtype and tf32 where given): the same command resumes the same campaign. A name
        longer than NAME_LIMIT, or one with a spec given as a path (two files can share a
        stem), is cut and ends in a hash of the whole description."""
        if self.name:
            return self.name
        parts = ["-".join(Path(s).stem for s in self.specs), "-".join(self.backends), "-".join(self.modes)]
        parts += ["b" + "-".join(map(str, self.batch_sizes))] if self.batch_sizes else []
        parts += [self.dtype] if self.dtype else []
        parts += ["tf32"] if self.tf32 else []
        readable = re.sub(r"[^A-Za-z0-9._-]+", "-", "_".join(parts)).lstrip(".-") or "campaign"
        if len(readable) <= NAME_LIMIT and all(NAME_PATTERN.fullmatch(s) for s in self.specs):
            return readable
        what = json.dumps([self.specs, self.backends, self.modes, self.batch_sizes, self.dtype, self.tf32])
        digest = hashlib.sha256(what.encode()).hexdigest()[:8]
        return readable[: NAME_LIMIT - len(digest) - 1].rstrip("._-") + "-" + digest


def load_campaign(path: Path) -> CampaignConfig:
    """A campaign YAML; SpecError (file, field, what is allowed) on anything wrong."""
    parser = Parser(str(path))
    raw = older_precision(parser, read_mapping(path))
    config = parser.parse_dataclass(CampaignConfig, raw, "")
    for i, size in enumerate(config.batch_sizes):
        if size < 1:
            parser.fail(f"batch_sizes[{i}]", f"must be >= 1, got {size}")
    return validate(config, str(path))


def older_precision(parser: Parser, raw: dict) -> dict:
    """A campaign mapping with the older ``tf32: true|false`` read as ``precision``; SpecError
    when it is not a boolean or contradicts a ``precision`` given beside it."""
    if "tf32" not in raw:
        return raw
    raw = dict(raw)
    tf32 = raw.pop("tf32")
    if not isinstance(tf32, bool):
        parser.fail("tf32", f"must be true or false (or give precision: {' | '.join(PRECISION_NAMES)})")
    named = "tf32" if tf32 else "ieee-fp32"
    if "precision" in raw and raw["precision"] != named:
        parser.fail("tf32", f"tf32: {str(tf32).lower()} contradicts precision: {str(raw['precision'])[:60]}")
    raw["precision"] = named
    return raw


def validate(config: CampaignConfig, source: str) -> CampaignConfig:
    """Refuse unknown names and empty lists up front (a typo should not cost a campaign)."""
    validate_names(config, source)
    for what in ("specs", "backends", "modes"):
        if not getattr(config, what):
            raise SpecError(source, what, "must name at least one")
    return config


def validate_names(config: CampaignConfig, source: str) -> None:
    """Backends against the registered plugins, specs against spec files, modes against
    MODE_NAMES and the name as a folder name; no framework is imported."""
    known = sorted(registered_plugins())
    for i, name in enumerate(config.backends):
        if name not in known:
            raise SpecError(
                source,
                f"backends[{i}]",
                f"no backend {bounded(name)}{did_you_mean(name, known)}; registered: {', '.join(known)}",
            )
    for i, name in enumerate(config.specs):
        try:
            path = spec_path(name)
        except SpecError as exc:
            raise SpecError(source, f"specs[{i}]", exc.message) from None
        if not path.is_file():
            raise SpecError(source, f"specs[{i}]", f"no such spec file: {bounded(str(path))}")
    for i, mode in enumerate(config.modes):
        if mode not in MODE_NAMES:
            raise SpecError(source, f"modes[{i}]", f"must be one of {', '.join(MODE_NAMES)}, got {bounded(mode)}")
    if config.name is not None and not NAME_PATTERN.fullmatch(config.name):
        raise SpecError(
            source, "name", f"must be a folder name of letters, digits, '.', '_' and '-', got {bounded(config.name)}"
        )


def bounded(text: str, limit: int = 60) -> str:
    """A user's value quoted in an error, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


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


class CellTracker(TypingProtocol):
    """What records a stored cell elsewhere (aebench.track.bench_run.CellTracker)."""

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
        """This shard's cells of a plan."""
        return [cell for k, cell in enumerate(cells) if k % self.count == self.index - 1]


@dataclass(frozen=True)
class Budget:
    """No new cell starts once ``max_seconds`` have passed since ``start`` (None: no limit);
    a cell already running finishes (or meets its own timeout)."""

    max_seconds: Optional[float] = None
    start: float = field(default_factory=time.monotonic)

    def spent(self) -> bool:
        """Whether no new cell may start."""
        return self.max_seconds is not None and time.monotonic() - self.start >= self.max_seconds


def run_campaign(
    config: CampaignConfig,
    results_root: Path,
    executor: Optional[Executor] = None,
    retry_failed: bool = False,
    mnist: Optional[str] = None,
    tracker: Optional[CellTracker] = None,
    on_cell: Callable[[int, int, dict, str], None] = lambda i, n, row, note: None,
    on_start: Callable[[int, int, Cell], None] = lambda i, n, cell: None,
    shard: Shard = Shard(),
    budget: Optional[Budget] = None,
    say: Callable[[str], None] = lambda line: None,
    remeasure_peak: bool = False,
    rerun_changed: bool = False,
) -> ResultStore:
    """Run every cell of this shard not yet recorded, until the budget is spent. Running it
    again resumes: recorded cells are skipped.

    Holds the folder's campaign lock throughout (CampaignBusy when another process runs a
    campaign there). Before any cell: removes exchange files a killed campaign left, makes
    cells.csv agree with the cell records (``say`` gets the one line on what was repaired)
    and writes environment.json. ``remeasure_peak``: each (device, backend, dtype, precision)
    measures its peak again, once in this run, before its first cell is timed.

    A recorded cell whose settings differ from this run's (aebench.bench.identity) stops the
    campaign before any cell with SettingsChanged, or with ``rerun_changed`` is measured again;
    a failed cell whose settings changed (a --data path corrected) runs again without asking.

    Each row is stored before it is tracked, so a tracking failure cannot lose a result;
    ``on_start`` is told of each cell as it starts, ``on_cell`` gets each row as it finishes
    and the tracker's line ("" without a tracker).
    """
    budget = budget or Budget()
    store = ResultStore(own_folders(results_root, Path(config.campaign_name())))
    with campaign_lock(store.folder):
        clear_exchange(store.folder)
        repaired = store.repair(upgrade_layout=True)
        if repaired:
            say(repaired)
        write_environment(store.folder / "environment.json", config)
        executor = executor or LocalExecutor(store.folder / "logs", config.timeout_s)
        done = store.recorded(retry_failed)
        planned = shard.select(plan_cells(config, mnist))
        records = store.records().rows
        changed = changed_cells(planned, {key: row for key, row in records.items() if key in done})
        measured = {key: found for key, found in changed.items() if records[key].get("status") != "failed"}
        if not rerun_changed:
            refuse_changed(config.campaign_name(), measured)
        todo = [cell for cell in planned if cell.key not in done or cell.key in changed]
        if remeasure_peak:
            since = time.time()
            todo = [replace(cell, peak_fresh_since=since) for cell in todo]
        started = 0

        def may_start(cell: Cell) -> bool:
            nonlocal started
            if budget.spent():
                return False
            started += 1
            on_start(started, len(todo), cell)
            return True

        for i, (cell, row) in enumerate(executor.run_all(todo, may_start), 1):
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
    write_text(path, json.dumps(payload, indent=2, default=str) + "\n")


def with_overrides(config: CampaignConfig, **changes) -> CampaignConfig:
    """The config with the given fields replaced (None leaves a field as it is)."""
    return replace(config, **{k: v for k, v in changes.items() if v is not None})
