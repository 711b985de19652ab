"""One campaign at a time in a campaign folder: an flock on ``<campaign>/campaign.lock``.

Two campaigns in one folder would time their cells on the same cores, append the same keys
and overwrite each other's records and MLflow bundles. The lock file holds a small JSON
(pid, host, command, since) so that the second one can say who holds the folder. The kernel
drops an flock when its holder's last descriptor closes, so a killed campaign (SIGKILL
included) never leaves the folder locked. Within one process the lock is re-entrant: the
``bench`` command holds it around the campaign and its report, and the campaign takes it
again.

The lock file is opened without following a link and never truncated unless it is a regular
file of its own (aebench.safe_files.open_own): a link planted at ``campaign.lock`` is one error
line naming it, and the file it points to is left as it is.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from aebench.errors import AebenchError
from aebench.safe_files import open_own, read_text

LOCK_NAME = "campaign.lock"
_held: dict[Path, list[int]] = {}  # resolved folder -> [descriptor, depth] of the locks this process holds


class CampaignBusy(AebenchError):
    """Another process holds the campaign folder; the message says which (pid, host, since)."""


def holder_description(lock_path: Path) -> str:
    """Who holds the lock, from the JSON its holder wrote (bounded, one line)."""
    try:
        info = json.loads(read_text(lock_path)[:4000])
    except (OSError, ValueError, AebenchError):
        info = None
    if not isinstance(info, dict):
        return "another process (it has not written its details yet)"
    command = " ".join(str(info.get("command", "?")).split())[:200]
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, since {info.get('since', '?')}: {command}"


@contextmanager
def campaign_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s campaign lock for the block; CampaignBusy at once when another process holds it."""
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    fd = _acquire(folder)
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        os.close(fd)  # closing the only descriptor releases the flock


def _acquire(folder: Path) -> int:
    """The locked descriptor of ``folder``'s lock file, holding this process' details."""
    lock_path = folder / LOCK_NAME
    fd = open_own(lock_path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CampaignBusy(
            f"{folder}: a campaign is already running in this folder (held by {holder_description(lock_path)}); "
            "wait for it to end, or choose another --name or --results"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    details = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv),
        "since": datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    text = (json.dumps(details) + "\n").encode()
    os.pwrite(fd, text, 0)
    os.ftruncate(fd, len(text))  # an earlier holder's longer details end here
    return fd
