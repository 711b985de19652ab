"""Running a cell in a fresh process on this machine: the local executor and its helpers.

The cell's exchange files (the cell it is given, the result it writes) live in
``<campaign>/tmp/<key>/``, not in the system's temporary folder: they are removed when the
cell ends, and whatever a killed campaign left there is removed when the next campaign
starts in the folder (``clear_exchange``). The cell process dies with its parent
(aebench.bench.parent).

Nothing is written through a link (aebench.safe_files): the logs and exchange folders must
not be links (checked before the first cell: one error line), and a cell's log is made afresh,
never opened through a link planted at ``logs/<key>.log`` (that cell fails, naming the link).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from typing import Protocol as TypingProtocol

from aebench.bench.cell import Cell, failure_reason
from aebench.bench.identity import cell_settings
from aebench.bench.parent import parent_environment
from aebench.bench.store import EXCHANGE_FOLDER, safe_name
from aebench.plugins.discovery import child_environment
from aebench.safe_files import fresh_file, own_folder, read_json, read_text, refuse_link, write_text


class Executor(TypingProtocol):
    def run_all(self, cells: Iterable[Cell], may_start: Callable[[Cell], bool]) -> Iterator[tuple[Cell, dict]]:
        """Measure each cell in a fresh process; (cell, row) as each finishes, failures
        included. A cell is started only when ``may_start(cell)``, asked just before it
        would start, is true."""


def clear_exchange(campaign_folder: Path) -> None:
    """Remove the exchange files a killed campaign left in ``<campaign>/tmp/``."""
    shutil.rmtree(campaign_folder / EXCHANGE_FOLDER, ignore_errors=True)


@dataclass
class LocalExecutor:
    """Runs each cell in a fresh ``python -m aebench.bench.cell`` on this machine, one at a time;
    its output goes to ``logs/<key>.log`` and its exchange files to ``scratch/<key>/``
    (default: ``tmp/`` beside ``logs/``, i.e. ``<campaign>/tmp/``), removed after the cell."""

    logs: Path
    timeout_s: float
    scratch: Optional[Path] = None

    @property
    def exchange_root(self) -> Path:
        """Where the cells' exchange folders are made."""
        return self.scratch if self.scratch is not None else self.logs.parent / EXCHANGE_FOLDER

    def run_all(self, cells: Iterable[Cell], may_start: Callable[[Cell], bool]) -> Iterator[tuple[Cell, dict]]:
        """One cell after the other; an error of the executor itself is that cell's failed row.
        A link in place of the logs or exchange folder is AebenchError before any cell."""
        own_folder(self.logs)
        own_folder(self.exchange_root)
        for cell in cells:
            if not may_start(cell):
                return
            try:
                row = self.run(cell)
            except Exception as exc:  # noqa: BLE001 - an executor failure is this cell's result
                row = failed_row(cell, failure_reason(exc))
            yield cell, row

    def run(self, cell: Cell) -> dict:
        """One cell in a fresh process: its row, or a failed row saying why there is none."""
        log_path = own_folder(self.logs) / f"{safe_name(cell.key)}.log"
        exchange = self._fresh_exchange(cell)
        try:
            cell_file, result_file = exchange / "cell.json", exchange / "result.json"
            write_text(cell_file, cell.to_json())
            failure = self._run_process(cell_file, result_file, log_path)
            if result_file.is_file():
                return read_json(result_file)
        finally:
            shutil.rmtree(exchange, ignore_errors=True)
            remove_if_empty(self.exchange_root)
        return failed_row(cell, failure or "the cell process wrote no result", log_path)

    def _fresh_exchange(self, cell: Cell) -> Path:
        """An empty ``<exchange root>/<key>/``, made anew; AebenchError where a link stands there."""
        exchange = own_folder(self.exchange_root) / safe_name(cell.key)
        refuse_link(exchange)
        shutil.rmtree(exchange, ignore_errors=True)
        exchange.mkdir()
        return exchange

    def _run_process(self, cell_file: Path, result_file: Path, log_path: Path) -> str:
        """Run the cell process, its output into a fresh ``log_path``; "" or why it failed."""
        command = [sys.executable, "-m", "aebench.bench.cell", str(cell_file), str(result_file)]
        environment = {**child_environment(), **parent_environment()}
        with os.fdopen(fresh_file(log_path), "w") as log:
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=environment
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


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if nothing is left in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def exit_description(code: int) -> str:
    """How a process ended, in words (a SIGKILL is most often the kernel's out-of-memory killer)."""
    if code < 0:
        name = signal.Signals(-code).name
        hint = " (killed: out of memory?)" if -code == signal.SIGKILL else ""
        return f"died of {name}{hint}"
    return f"exited with code {code}"


def last_line(path: Path) -> str:
    """The last non-blank line of a log (at most 300 characters)."""
    lines = [line for line in read_text(path).splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no output"


def failed_row(cell: Cell, reason: str, log_path: Optional[Path] = None) -> dict:
    """The row of a cell that produced none, with the reason."""
    reason = f"out of memory: {reason}" if "out of memory" not in reason and "SIGKILL" in reason else reason
    row = {
        **cell.row_identity(),
        "dtype": cell.dtype,
        "status": "failed",
        "reason": reason,
        "settings": json.dumps(cell_settings(cell), sort_keys=True),
    }
    if log_path is not None:
        row["log"] = str(log_path)
    return row
