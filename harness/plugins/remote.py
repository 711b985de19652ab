"""A backend in a worker process of its own, behind the same Backend contract (the caller's side).

Used when a backend cannot load in the calling process (Keras on a second engine). Every
call crosses a pipe: specs, NumPy arrays and steps go in, NumPy arrays come back; models
and trainers stay in the worker (aebench.plugins.worker) and are referred to by handles.
"""

from __future__ import annotations

import atexit
import pickle
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from aebench.errors import BackendUnavailable
from aebench.plugins.backend_api import Batch, Step, Weights
from aebench.plugins.discovery import child_environment
from aebench.plugins.precision import process_precision
from aebench.spec.types import Spec


class WorkerError(RuntimeError):
    """A call that raised inside the worker; the message carries the worker's traceback."""


@dataclass(frozen=True)
class Handle:
    """A model or trainer that lives in the worker."""

    backend: WorkerBackend
    id: int


class RemoteTrainer:
    def __init__(self, handle: Handle):
        self.handle = handle

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        return self.handle.backend.call("run", self.handle.id, list(steps))


class WorkerBackend:
    """The named backend, loaded in a fresh ``python -m aebench.plugins.worker NAME PRECISION``
    process, at this process's precision (aebench.plugins.precision).

    A plain subprocess (not multiprocessing's spawn, which re-runs the caller's main
    script); pickled calls and replies cross its stdin and stdout.
    """

    def __init__(self, name: str):
        self.name = name
        self._process = subprocess.Popen(
            [sys.executable, "-m", "aebench.plugins.worker", name, process_precision().describe()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=child_environment(),
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._requests, self._replies = self._process.stdin, self._process.stdout
        atexit.register(self.close)
        try:
            info = self._receive()
        except WorkerError as exc:
            raise BackendUnavailable(f"backend '{name}' could not load in its worker process: {exc}") from None
        self._versions, self._device = info["versions"], info["device"]
        self._layer_kinds, self._loss_term_kinds = info["layer_kinds"], info["loss_term_kinds"]

    def _receive(self) -> Any:
        try:
            status, value = pickle.load(self._replies)
        except EOFError:
            code = self._process.wait(timeout=30)
            raise WorkerError(f"worker process of {self.name} exited (code {code}); its stderr says why") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def call(self, method: str, *args: Any) -> Any:
        pickle.dump((method, args), self._requests, protocol=pickle.HIGHEST_PROTOCOL)
        self._requests.flush()
        return self._receive()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self.call("close")
            except (OSError, EOFError, WorkerError):
                pass
            self._process.wait(timeout=30)

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def precision_switches(self) -> dict[str, str]:
        """The worker's framework's precision switches as it reports them now."""
        return self.call("precision_switches")

    def device(self) -> str:
        return self._device

    def layer_kinds(self) -> frozenset[str]:
        return self._layer_kinds

    def loss_term_kinds(self) -> frozenset[str]:
        return self._loss_term_kinds

    def build(self, spec: Spec) -> Handle:
        return Handle(self, self.call("build", spec))

    def set_weights(self, model: Handle, weights: Weights) -> None:
        self.call("set_weights", model.id, weights)

    def get_weights(self, model: Handle) -> Weights:
        return self.call("get_weights", model.id)

    def loss_terms(self, model: Handle, batch: Batch, training: bool = True) -> dict[str, float]:
        return self.call("loss_terms", model.id, batch, training)

    def gradients(self, model: Handle, batch: Batch) -> tuple[dict[str, float], Weights]:
        return self.call("gradients", model.id, batch)

    def trainer(
        self, model: Handle, x: np.ndarray, labels: Optional[np.ndarray], steps_per_epoch: Optional[int] = None
    ) -> RemoteTrainer:
        return RemoteTrainer(Handle(self, self.call("trainer", model.id, x, labels, steps_per_epoch)))

    def encode(self, model: Handle, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        return self.call("encode", model.id, x, labels)

    def decode(self, model: Handle, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        return self.call("decode", model.id, z, labels)
