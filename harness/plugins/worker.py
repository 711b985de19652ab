"""The worker process of a backend that cannot load in its caller's process (the serving side).

``python -m aebench.plugins.worker NAME PRECISION`` sets the process's precision (its
caller's), loads backend NAME and answers the pickled calls of
aebench.plugins.remote.WorkerBackend on stdin/stdout until told to close.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from typing import Any, BinaryIO

from aebench.plugins.bench_api import Precision
from aebench.plugins.precision import set_process_precision
from aebench.plugins.registry import load_backend, precision_switches


def serve(name: str, inbox: BinaryIO, outbox: BinaryIO, precision: Precision = Precision()) -> None:
    """The worker's loop: set ``precision``, load the backend, then answer calls until 'close' or EOF."""

    def reply(status: str, value: Any) -> None:
        pickle.dump((status, value), outbox, protocol=pickle.HIGHEST_PROTOCOL)
        outbox.flush()

    try:
        set_process_precision(precision)
        backend = load_backend(name)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the reason
        reply("error", str(exc))
        return
    reply(
        "ok",
        {
            "versions": backend.versions(),
            "device": backend.device(),
            "layer_kinds": backend.layer_kinds(),
            "loss_term_kinds": backend.loss_term_kinds(),
        },
    )
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
    if method == "precision_switches":
        return precision_switches(backend.name)
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
    """``python -m aebench.plugins.worker NAME [PRECISION]``: serve NAME over stdin/stdout at
    PRECISION (default ieee-fp32). Anything the frameworks print goes to stderr, so the protocol
    stream stays clean."""
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    precision = Precision.from_json(sys.argv[2]) if len(sys.argv) > 2 else Precision()
    serve(sys.argv[1], sys.stdin.buffer, protocol_out, precision)


if __name__ == "__main__":
    main()
