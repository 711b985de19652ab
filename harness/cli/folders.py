"""Output folders given on the command line, checked before any work starts."""

from __future__ import annotations

import tempfile
from pathlib import Path

from aebench.errors import AebenchError


def writable_folder(path: Path, flag: str) -> Path:
    """``path``, created if needed and proved writable by a probe file; one line naming ``flag`` otherwise."""
    shown = str(path) if len(str(path)) <= 200 else str(path)[:200] + "..."
    try:
        if path.exists() and not path.is_dir():
            raise AebenchError(f"{flag}: {shown} is a file, not a folder")
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise AebenchError(f"{flag}: cannot write to {shown} ({reason})") from None
    return path
