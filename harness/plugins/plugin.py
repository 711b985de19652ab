"""What a backend registers: a ``Plugin`` naming its loaders, and the module contracts they return.

An ``aebench.backends`` entry point names a Plugin. Built-in and third-party backends
register the same way, and the harness reaches every part of a backend through this
object, never by building module names: ``load()`` imports the framework and returns the
Backend (aebench.plugins.backend_api); ``bench()`` returns the benchmark modes (a module
that imports no framework at import time); ``peak()`` returns the matmul used for the
device's measured peak. A backend folder holds the same modules in every framework
(BACKEND_MODULES); tests/test_backend_contract.py checks each registered plugin against it.
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
        """A runner for ``mode`` with everything on the device and ``precision`` applied."""

    def thread_pools(self) -> dict[str, int]:
        """The framework's thread pool sizes if it is loaded in this process, else {}."""


class PeakModule(Protocol):
    """A backend's ``peak`` module (aebench.bench.peak divides achieved FLOP/s by its result)."""

    def timed_matmuls(self, n: int, dtype: str, precision: Precision, repeats: int) -> float:
        """Seconds for ``repeats`` chained n x n matmuls after one warm-up, synced at the end."""


class NeedsOwnProcess(ImportError):
    """Raised by a plugin's loader when its framework cannot load in this process (Keras on
    another engine already imported here); the registry then runs it in a worker process."""


@dataclass(frozen=True)
class Plugin:
    """A registered backend.

    name: the backend's name (the entry point's); framework: what it runs on, as results
    show it; load: imports the framework and returns the Backend (ImportError: unavailable);
    bench and peak: return the backend's bench and peak modules; distributions: installed
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
    distributions: tuple[str, ...] = ()
    reference_rank: int = 100
    install_hint: str = ""
    requires: tuple[str, ...] = ()
    environment: Mapping[str, str] = field(default_factory=dict)
