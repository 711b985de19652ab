"""Output folders given on the command line, checked before any work starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from aebench.errors import AebenchError


def shown(path: Path) -> str:
    """A path as an error line quotes it (at most 200 characters)."""
    return str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."


def refuse_unwritable(path: Path, flag: str) -> None:
    """One line naming ``flag`` when ``path`` is a file, or lies under a file or a folder this
    process cannot write; creates nothing (so a command refused later leaves no empty folder)."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        raise AebenchError(f"{flag}: {shown(path)} is a file, not a folder")
    if not existing.is_dir():
        raise AebenchError(f"{flag}: cannot write to {shown(path)} ({shown(existing)} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise AebenchError(f"{flag}: cannot write to {shown(path)} (Permission denied)")


def writable_folder(path: Path, flag: str) -> Path:
    """``path``, created if needed and proved writable by a probe file; one line naming ``flag`` otherwise."""
    try:
        if path.exists() and not path.is_dir():
            raise AebenchError(f"{flag}: {shown(path)} is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AebenchError(f"{flag}: cannot write to {shown(path)} ({reason})") from None
    return path


def writable_file(path: Path, flag: str) -> Path:
    """``path`` as a file that can be written: not a folder, in a folder that exists and takes a
    new file (proved by a probe file, removed at once: permissions alone do not say so for root
    or for a folder such as /proc); one line naming ``flag`` otherwise (checked before any work)."""
    if path.is_dir():
        raise AebenchError(f"{flag}: {shown(path)} is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise AebenchError(f"{flag}: cannot write {shown(path)} (no folder {shown(folder)})")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise AebenchError(f"{flag}: cannot write {shown(path)} (Permission denied)")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise AebenchError(f"{flag}: cannot write {shown(path)} ({exc.strerror or exc})") from None
    return path
