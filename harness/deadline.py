"""A call waited for until a deadline, for waits that take no deadline of their own.

A host name lookup (getaddrinfo) and a server sending a byte now and then bound each read but
not the whole request. ``within`` runs such a call in a daemon thread and waits for it at most
``seconds``: past that it raises the caller's exception and leaves the call to end in its thread
(nothing can stop a blocked lookup from outside), so the caller must not try that peer again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def within(seconds: float, call: Callable[[], T], late: Callable[[], BaseException], name: str) -> T:
    """``call()``, waited for ``seconds`` at most: its result, or its exception raised again here;
    ``late()`` raised once the deadline passes. ``name`` names the thread (seen in a stack dump)."""
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["value"] = call()
        except Exception as exc:  # noqa: BLE001 - raised again in the waiting thread
            done["error"] = exc

    worker = threading.Thread(target=run, daemon=True, name=name)
    worker.start()
    worker.join(max(seconds, 0.0))
    if worker.is_alive():
        raise late()
    if "error" in done:
        raise done["error"]
    return done["value"]
