"""What a backend registers: a ``Plugin`` naming its loaders, and the module contracts they return.

An ``aebench.backends`` entry point names a Plugin. Built-in and third-party backends
register the same way, and the harness reaches every part of a backend through this
object, never by building module names: ``load()`` imports the framework and returns the
Backend (aebench.plugins.backend_api); ``bench()`` returns the benchmark modes (a module
that imports no framework at import time); ``peak()`` returns the matmul used for the
device's measured peak; ``precision()`` returns the module that sets the framework's
precision switches and reads them back (applied once per process: aebench.plugins.precision).
A backend folder holds the same modules in every framework (BACKEND_MODULES);
tests/test_backend_contract.py checks each registered plugin against it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from aebench.plugins.backend_api import Backend
from aebench.plugins.bench_api import BenchData, Precision, StepRunner
from aebench.spec.types import Spec

BACKEND_MODULES = ("backend", "bench", "losses", "model", "peak", "precision", "train", "weights")
"""The modules of every backend folder (keras adds engines.py, torch and keras bench_runners.py)."""


class BenchModule(Protocol):
    """A backend's ``bench`` module: its modes, and runners for them (aebench.plugins.bench_api)."""

    MODES: dict[str, str]

    def unsupported(self, backend: Backend, mode: str) -> str:
        """Why ``mode`` cannot run on the loaded backend's device; "" if it can."""

    def prepare(
        self, backend: Backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int
    ) -> StepRunner:
        """A runner for ``mode`` with everything on the device; ``precision`` is the process's,
        applied when the backend loaded (the runner does not set it)."""

    def thread_pools(self) -> dict[str, int]:
        """The framework's thread pool sizes if it is loaded in this process, else {}."""


class PeakModule(Protocol):
    """A backend's ``peak`` module (aebench.bench.peak divides achieved FLOP/s by its result)."""

    def timed_matmuls(self, n: int, dtype: str, precision: Precision, repeats: int) -> float:
        """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end, at
        the process's precision (``precision`` names it; the matmul does not set it)."""


class PrecisionModule(Protocol):
    """A backend's ``precision`` module: the framework's precision switches, set in one place.
    Switch names and values are strings (MLflow params record them as they are)."""

    def apply_precision(self, precision: Precision) -> dict[str, str]:
        """Set the framework's switches for ``precision``, then return what the framework
        reports (read_precision), not what was asked. Called once per process, right after the
        backend loads (aebench.plugins.precision.apply_process_precision), never by a build,
        runner or trainer."""

    def read_precision(self) -> dict[str, str]:
        """The switches as the framework reports them now, by name (e.g.
        ``torch.backends.cuda.matmul.allow_tf32``: ``false``)."""

    def expected_switches(self, precision: Precision) -> dict[str, str]:
        """What read_precision reports once ``precision`` is applied."""


class NeedsOwnProcess(ImportError):
    """Raised by a plugin's loader when its framework cannot load in this process (Keras on
    another engine already imported here); the registry then runs it in a worker process."""


@dataclass(frozen=True)
class Plugin:
    """A registered backend.

    name: the backend's name (the entry point's); framework: what it runs on, as results
    show it; load: imports the framework and returns the Backend (ImportError: unavailable);
    bench, peak and precision: return the backend's bench, peak and precision modules
    (precision's module imports the framework: only for a loaded backend); distributions: installed
    packages whose versions every result records; reference_rank: lower ranks are preferred
    as the reference of ``aebench check``; install_hint: how to install what is missing;
    requires: modules that must be importable (checked without importing them);
    environment: variables the framework reads when it is imported, set (where the user has
    not set them) before any backend loads and in every process the harness starts, so that
    several processes can share one GPU (JAX preallocates 75% of it per process otherwise).
    """

    name: str
    framework: str
    load: Callable[[], Backend]
    bench: Callable[[], BenchModule]
    peak: Callable[[], PeakModule]
    precision: Callable[[], PrecisionModule]
    distributions: tuple[str, ...] = ()
    reference_rank: int = 100
    install_hint: str = ""
    requires: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
