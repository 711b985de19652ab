"""A call waited for until a deadline, for waits that take no deadline of their own.

A host name lookup (getaddrinfo) and a server sending a byte now and then bound each read but
not the whole request. ``within`` runs such a call in a daemon thread and waits for it at most
``seconds``: past that it raises the caller's exception and leaves the call to end in its thread.

That thread cannot be cancelled: Python has no way to stop a thread blocked in a lookup or a
read, so it lingers, holding its socket and what the call allocated, until the peer answers, a
read's own timeout ends it, or the process exits (a daemon thread does not hold up the exit).
What bounds the lingering threads is the callers' rule: a peer found past a deadline is not
tried again by the same command, so each hung peer leaves at most one. The tracking calls keep
it (LogOutcome.hung: ``aebench log`` and a campaign's cells keep the later bundles without
trying; train logs one run; compare stops at the first), and fetch-mnist makes one download.
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
