"""Campaign cells as Ray tasks: the distributed executor (``aebench bench --executor ray``).

Each cell is one Ray task that runs the same fresh ``python -m aebench.bench.cell`` process as
the local executor (it *is* a LocalExecutor, on whichever node Ray picks), so a cell measures
the same way on one machine or on fifty. Ray is the scheduler; aebench asks it for resources
so that no two timed cells share a device:

- on a cluster with GPUs, every cell asks for one whole GPU (Ray sets CUDA_VISIBLE_DEVICES);
- on a CPU-only cluster, every cell asks for all the CPUs of the smallest node, and the cell
  process's thread pools are pinned to the CPUs Ray gave the task (OMP/MKL/TF thread counts).

At most as many cells are in flight as can run at once, so no new cell starts after the
campaign's time budget is spent. Rows come back to the driver, which appends them to the same
result store as the local executor (same keys, resume and failure recording); each cell's log
comes back with its row and is written to the driver's ``logs/`` folder. A worker that dies
during a cell makes that cell a failed row (Ray does not retry it: ``max_retries=0``), so a
cell is never recorded twice.

``ray`` is an optional extra (``pip install 'aebench[ray]'``); without it, asking for this
executor is one error line and exit 2.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from aebench.bench.cell import Cell
from aebench.bench.executor import LocalExecutor, failed_row
from aebench.bench.store import safe_name
from aebench.errors import AebenchError
from aebench.safe_files import own_folder, write_text

CONNECT_TIMEOUT_S = 5.0  # a Ray head on a reachable network answers a TCP connect well within this
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def import_ray() -> Any:
    """The ray module, or one line saying how to install it."""
    try:
        import ray
    except ImportError:
        raise AebenchError("--executor ray: ray is not installed (pip install 'aebench[ray]')") from None
    return ray


@dataclass(frozen=True)
class CellResult:
    """What a cell task sends back: its row, its log text, and where and when it ran."""

    row: dict
    log: str
    host: str
    started: float
    ended: float


def run_cell_on_worker(cell_json: str, timeout_s: float) -> CellResult:
    """The task body: one cell in a fresh process on this node, threads pinned to the task's CPUs."""
    cell = Cell.from_json(cell_json)
    _pin_threads_to_assigned_cpus()
    with tempfile.TemporaryDirectory(prefix="aebench-ray-cell-") as tmp:
        started = time.time()
        row = LocalExecutor(Path(tmp), timeout_s, scratch=Path(tmp) / "exchange").run(cell)
        ended = time.time()
        log_path = Path(tmp) / f"{safe_name(cell.key)}.log"
        log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    return CellResult(row, log, socket.gethostname(), started, ended)


def _pin_threads_to_assigned_cpus() -> None:
    """Thread pools of the cell process sized to the CPUs Ray assigned to this task."""
    ray = import_ray()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
    if cpus:
        for var in THREAD_VARIABLES:
            os.environ[var] = str(max(1, int(cpus)))


@dataclass
class RayExecutor:
    """Runs cells as Ray tasks on the cluster at ``address`` ("auto": the running cluster
    this node belongs to; "ray://HOST:PORT": a remote one; None: a new local cluster)."""

    logs: Path
    timeout_s: float
    address: Optional[str] = None

    def __post_init__(self) -> None:
        """Refuse at once, in one line, what cannot work: no ray, nothing at the address."""
        if self.address not in (None, "auto"):
            check_reachable(self.address)
            use_token_if_present()  # before ray is imported: it reads RAY_AUTH_MODE then
        import_ray()

    def run(self, cell: Cell) -> dict:
        """One cell (the Executor contract); campaigns use ``run_all``."""
        [(_, row)] = self.run_all([cell], lambda _: True)
        return row

    def run_all(self, cells: Iterable[Cell], may_start: Callable[[Cell], bool]) -> Iterator[tuple[Cell, dict]]:
        """(cell, row) as each finishes; a cell starts only when ``may_start(cell)`` is true.
        A connection this call made is closed when it ends: a driver left connected exits its
        whole process (code 1, silently) about a minute after the cluster goes away."""
        ray = import_ray()
        connected_here = self._connect(ray)
        try:
            yield from self._run_connected(ray, cells, may_start)
        finally:
            if connected_here:
                ray.shutdown()

    def _run_connected(
        self, ray: Any, cells: Iterable[Cell], may_start: Callable[[Cell], bool]
    ) -> Iterator[tuple[Cell, dict]]:
        resources, slots = cell_resources(ray.cluster_resources(), _node_cpus(ray))
        task = ray.remote(max_retries=0, **resources)(run_cell_on_worker)
        queue, in_flight = list(cells), dict[Any, Cell]()
        while queue or in_flight:
            while queue and len(in_flight) < slots and may_start(queue[0]):
                cell = queue.pop(0)
                in_flight[task.remote(cell.to_json(), self.timeout_s)] = cell
            if not in_flight:
                return
            [done], _ = ray.wait(list(in_flight), num_returns=1)
            cell = in_flight.pop(done)
            yield cell, self._row(ray, done, cell)

    def _connect(self, ray: Any) -> bool:
        """Connect this process to the cluster; False when it already was."""
        if ray.is_initialized():
            return False
        try:
            ray.init(address=self.address, log_to_driver=False, include_dashboard=False, logging_level="error")
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = self.address or "a new local cluster"
            raise AebenchError(f"--ray-address: cannot connect to {where}: {str(exc).splitlines()[0]}") from None
        return True

    def _row(self, ray: Any, ref: Any, cell: Cell) -> dict:
        """The task's row with where and when it ran, its log written here; a lost task is a failed row."""
        log_path = own_folder(self.logs) / f"{safe_name(cell.key)}.log"
        try:
            result: CellResult = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = f"the Ray task died: {type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
            return failed_row(cell, reason, log_path)
        write_text(log_path, result.log)
        row = dict(result.row)
        row.update(host=result.host, process_started=result.started, process_ended=result.ended, log=str(log_path))
        return row


def use_token_if_present() -> None:
    """Send the cluster's auth token when there is one (``ray start`` enables token
    authentication by default since Ray 2.60, and a driver given an address sends the token
    only under RAY_AUTH_MODE=token); a RAY_AUTH_MODE the user set is left as it is."""
    token_file = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or token_file.is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"


def check_reachable(address: str, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
    """One line, at once, when nothing answers at HOST:PORT (ray.init would retry for minutes)."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise AebenchError(f"--ray-address: must be auto, HOST:PORT or ray://HOST:PORT, got {address[:100]!r}")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise AebenchError(f"--ray-address: nothing answers at {host}:{port} ({exc.strerror or exc})") from None


def cell_resources(cluster: dict[str, float], node_cpus: list[float]) -> tuple[dict[str, float], int]:
    """Ray resources of one cell task and how many cells can run at once: one whole GPU each
    where the cluster has GPUs, else all the CPUs of the smallest node (one cell per node)."""
    gpus = int(cluster.get("GPU", 0))
    if gpus:
        return {"num_gpus": 1, "num_cpus": 1}, gpus
    if not node_cpus:
        raise AebenchError("--executor ray: the Ray cluster has no alive node with CPUs")
    return {"num_cpus": min(node_cpus)}, len(node_cpus)


def _node_cpus(ray: Any) -> list[float]:
    alive = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    return [resources["CPU"] for resources in alive if resources.get("CPU")]
