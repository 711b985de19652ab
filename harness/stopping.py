"""The signals that stop a training, and the writes a second signal must not cut.

While ``signals_stop_training`` is in force (``aebench train`` puts it around its training),
the first SIGINT (Ctrl-C) or SIGTERM raises in the main thread: KeyboardInterrupt, or
Terminated for SIGTERM, so the run ends as KILLED. A second signal often follows within
milliseconds (Ctrl-C pressed twice, a supervisor's SIGTERM then SIGINT). Raised at once, it
would cut short the write of the run's end status and leave its bundle RUNNING. So from the
first signal on, and throughout every ``held`` block (the write of the end status), a signal
is held instead: when the block ends it is raised, cutting short only what comes after it
(the figures, MLflow), and any more signals of a stop already under way are dropped.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Optional

STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread while signals_stop_training is in force, so a training
    stops as on Ctrl-C and its run ends as KILLED."""

    signal_name = "SIGTERM"


@dataclass
class _Stop:
    holding: bool = False
    pending: Optional[int] = None


_STOP = _Stop()


def _interruption(signum: int) -> KeyboardInterrupt:
    return Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _handle(signum: int, frame: object) -> None:
    """The first signal raises and starts holding the ones after it; a held one waits for held's end."""
    if _STOP.holding:
        _STOP.pending = _STOP.pending or signum
        return
    _STOP.holding = True
    raise _interruption(signum)


@contextmanager
def signals_stop_training() -> Iterator[None]:
    """While the block runs, SIGINT and SIGTERM stop it as the module docstring says; the handlers
    before are put back after. Off the main thread, where Python takes no signal handlers,
    nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {signum: signal.getsignal(signum) for signum in STOPPING_SIGNALS}
    _STOP.holding, _STOP.pending = False, None
    for signum in STOPPING_SIGNALS:
        signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        _STOP.holding, _STOP.pending = False, None


@contextmanager
def held() -> Iterator[None]:
    """A block no stopping signal cuts: one that arrives in it, or that arrived since the first
    signal of a stop, is raised once the block has ended without an error. Without
    signals_stop_training in force this changes nothing (Python's Ctrl-C raises at once)."""
    _STOP.holding = True
    try:
        yield
    finally:
        pending, _STOP.pending = _STOP.pending, None
        _STOP.holding = pending is not None  # a stop under way: what follows it holds later signals too
    if pending is not None:
        raise _interruption(pending)
