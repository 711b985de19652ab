"""A backend in a worker process of its own, behind the same Backend contract.

Used when a backend cannot load in the calling process (Keras on a second engine). Every
call crosses a pipe: specs, NumPy arrays and steps go in, NumPy arrays come back; models
and trainers stay in the worker and are referred to by handles.
"""

from __future__ import annotations

import multiprocessing
import traceback
from dataclasses import dataclass
from typing import Any, Iterable, Optional

import numpy as np

from .backend_api import Batch, Step, Weights
from .errors import BackendUnavailable
from .spec import Spec


class WorkerError(RuntimeError):
    """A call that raised inside the worker; the message carries the worker's traceback."""


@dataclass(frozen=True)
class Handle:
    """A model or trainer that lives in the worker."""

    backend: "WorkerBackend"
    id: int


class RemoteTrainer:
    def __init__(self, handle: Handle):
        self.handle = handle

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        return self.handle.backend.call("run", self.handle.id, list(steps))


class WorkerBackend:
    """The named backend, loaded in a fresh (spawned) process."""

    def __init__(self, name: str):
        self.name = name
        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=serve, args=(name, child), daemon=True, name=f"aebench-{name}")
        self._process.start()
        child.close()
        try:
            info = self._receive()
        except WorkerError as exc:
            raise BackendUnavailable(f"backend '{name}' could not load in its worker process: {exc}") from None
        self._versions, self._device = info["versions"], info["device"]

    def _receive(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            self._process.join(timeout=5)
            raise WorkerError(f"worker process of {self.name} exited (code {self._process.exitcode})") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def call(self, method: str, *args: Any) -> Any:
        self._conn.send((method, args))
        return self._receive()

    def close(self) -> None:
        if self._process.is_alive():
            self._conn.send(("close", ()))
            self._process.join(timeout=10)

    def versions(self) -> dict[str, str]:
        return dict(self._versions)

    def device(self) -> str:
        return self._device

    def build(self, spec: Spec) -> Handle:
        return Handle(self, self.call("build", spec))

    def set_weights(self, model: Handle, weights: Weights) -> None:
        self.call("set_weights", model.id, weights)

    def get_weights(self, model: Handle) -> Weights:
        return self.call("get_weights", model.id)

    def loss_terms(self, model: Handle, batch: Batch) -> dict[str, float]:
        return self.call("loss_terms", model.id, batch)

    def gradients(self, model: Handle, batch: Batch) -> tuple[dict[str, float], Weights]:
        return self.call("gradients", model.id, batch)

    def trainer(self, model: Handle, x: np.ndarray, labels: Optional[np.ndarray]) -> RemoteTrainer:
        return RemoteTrainer(Handle(self, self.call("trainer", model.id, x, labels)))

    def encode(self, model: Handle, x: np.ndarray, labels: Optional[np.ndarray]) -> dict[str, np.ndarray]:
        return self.call("encode", model.id, x, labels)

    def decode(self, model: Handle, z: np.ndarray, labels: Optional[np.ndarray]) -> np.ndarray:
        return self.call("decode", model.id, z, labels)


def serve(name: str, conn: Any) -> None:
    """The worker's loop: load the backend, then answer calls until 'close' or EOF."""
    from .registry import load_backend

    try:
        backend = load_backend(name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the reason
        conn.send(("error", str(exc)))
        return
    conn.send(("ok", {"versions": backend.versions(), "device": backend.device()}))
    objects: dict[int, Any] = {}
    while True:
        try:
            method, args = conn.recv()
        except EOFError:
            return
        if method == "close":
            return
        try:
            conn.send(("ok", _dispatch(backend, objects, method, args)))
        except Exception:  # noqa: BLE001 - the parent re-raises it
            conn.send(("error", traceback.format_exc()))


def _dispatch(backend: Any, objects: dict[int, Any], method: str, args: tuple) -> Any:
    if method == "build":
        objects[len(objects)] = backend.build(args[0])
        return len(objects) - 1
    if method == "trainer":
        objects[len(objects)] = backend.trainer(objects[args[0]], *args[1:])
        return len(objects) - 1
    if method == "run":
        return objects[args[0]].run(args[1])
    return getattr(backend, method)(objects[args[0]], *args[1:])
