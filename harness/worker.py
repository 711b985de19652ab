"""A backend in a worker process of its own, behind the same Backend contract.

Used when a backend cannot load in the calling process (Keras on a second engine). Every
call crosses a pipe: specs, NumPy arrays and steps go in, NumPy arrays come back; models
and trainers stay in the worker and are referred to by handles.
"""

from __future__ import annotations

import atexit
import os
import pickle
import subprocess
import sys
import traceback
from dataclasses import dataclass
from typing import Any, BinaryIO, Iterable, Optional

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
    """The named backend, loaded in a fresh ``python -m aebench.worker NAME`` process.

    A plain subprocess (not multiprocessing's spawn, which re-runs the caller's main
    script); pickled calls and replies cross its stdin and stdout.
    """

    def __init__(self, name: str):
        self.name = name
        self._process = subprocess.Popen([sys.executable, "-m", "aebench.worker", name], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE)
        atexit.register(self.close)
        try:
            info = self._receive()
        except WorkerError as exc:
            raise BackendUnavailable(f"backend '{name}' could not load in its worker process: {exc}") from None
        self._versions, self._device = info["versions"], info["device"]

    def _receive(self) -> Any:
        try:
            status, value = pickle.load(self._process.stdout)
        except EOFError:
            code = self._process.wait(timeout=30)
            raise WorkerError(f"worker process of {self.name} exited (code {code}); its stderr says why") from None
        if status == "error":
            raise WorkerError(value)
        return value

    def call(self, method: str, *args: Any) -> Any:
        pickle.dump((method, args), self._process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        self._process.stdin.flush()
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


def serve(name: str, inbox: BinaryIO, outbox: BinaryIO) -> None:
    """The worker's loop: load the backend, then answer calls until 'close' or EOF."""
    from .registry import load_backend

    def reply(status: str, value: Any) -> None:
        pickle.dump((status, value), outbox, protocol=pickle.HIGHEST_PROTOCOL)
        outbox.flush()

    try:
        backend = load_backend(name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the reason
        reply("error", str(exc))
        return
    reply("ok", {"versions": backend.versions(), "device": backend.device()})
    objects: dict[int, Any] = {}
    while True:
        try:
            method, args = pickle.load(inbox)
        except EOFError:
            return
        if method == "close":
            reply("ok", None)
            return
        try:
            result = _dispatch(backend, objects, method, args)
        except Exception:  # noqa: BLE001 - the parent re-raises it
            reply("error", traceback.format_exc())
        else:
            reply("ok", result)


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


def main() -> None:
    """``python -m aebench.worker NAME``: serve NAME over stdin/stdout. Anything the
    frameworks print goes to stderr, so the protocol stream stays clean."""
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    serve(sys.argv[1], sys.stdin.buffer, protocol_out)


if __name__ == "__main__":
    main()
