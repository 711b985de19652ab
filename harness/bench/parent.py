"""A cell process dies with the campaign that started it.

A cell runs in a session of its own (so a timeout can kill its whole process group, and a
Ctrl-C at the terminal reaches the campaign, not the timed process). Without a tie, killing
the campaign (SIGKILL, a lost SSH session) left its cell running, and the resumed campaign
timed its cells beside the orphan.

How the tie is made, and why there:

- The executor names itself in the child's environment (``AEBENCH_CELL_PARENT=<pid>``).
- The cell, first thing in its ``main``, asks Linux to send it SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)`` through ctypes), then compares ``os.getppid()`` with
  the named parent: a parent that died before the tie was made is caught there, so there is
  no window. This is done in the child rather than in a ``preexec_fn``: ``preexec_fn`` is not
  safe in a process with threads (the Python docs warn it can deadlock), and the campaign
  process may run MLflow or Ray threads.
- Where prctl is missing (macOS, other Unixes), a daemon thread polls ``os.getppid()`` every
  half second and kills the cell when it changes (a reparented orphan gets a new parent).
  It wakes twice a second, far below anything a timed block can see.

PR_SET_PDEATHSIG fires when the *thread* that started the child ends; the executors start
and wait for a cell in the same thread, so that thread outlives the cell.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PARENT_VARIABLE = "AEBENCH_CELL_PARENT"
PR_SET_PDEATHSIG = 1
POLL_SECONDS = 0.5


def parent_environment() -> dict[str, str]:
    """The variable that ties a child started by this process to it."""
    return {PARENT_VARIABLE: str(os.getpid())}


def die_with_parent() -> str:
    """Tie this process to the parent named in the environment; how it was tied ("" when
    no parent is named, e.g. a cell run by hand). Exits at once if that parent is gone."""
    named = os.environ.get(PARENT_VARIABLE, "")
    if not named.isdigit():
        return ""
    parent = int(named)
    how = "prctl" if set_parent_death_signal() else "poll"
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    if how == "poll":
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="aebench-parent-watch").start()
    return how


def set_parent_death_signal() -> bool:
    """SIGKILL this process when its parent dies (Linux); False where that cannot be asked for."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)
