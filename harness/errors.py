"""Errors that reach the user as one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import errno


class AebenchError(Exception):
    """An error caused by the user's input; the CLI prints it on one line and exits 2."""

    exit_code = 2


class SpecError(AebenchError):
    """A spec file that cannot be used: names the file, the field path and what is allowed."""

    def __init__(self, file: str, field: str, message: str):
        self.file, self.field, self.message = file, field, message
        where = f"{file}: {field}" if field else file
        super().__init__(f"{where}: {message}")


class DataError(AebenchError):
    """A data file that is missing, unreadable or of the wrong layout."""


class BackendUnavailable(AebenchError):
    """A backend whose framework is not installed (or cannot be imported here)."""


DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
"""The errors of a write the file system refused for want of space (or a file-size limit)."""


class DiskFull(AebenchError):
    """A write failed for want of space: a full disk (ENOSPC), a full quota (EDQUOT) or the
    file size limit (EFBIG). Exit code 1: nothing is wrong with the user's input."""

    exit_code = 1


class NotImplementedByBackend(AebenchError):
    """A spec uses a layer kind or a loss term that a backend has no code for."""


class LayerNotImplemented(NotImplementedByBackend):
    """'BACKEND does not implement layer KIND (field)'."""

    def __init__(self, backend: str, kind: str, where: str):
        self.backend, self.kind, self.where = backend, kind, where
        super().__init__(f"{backend} does not implement layer {kind} ({where})")


class LossTermNotImplemented(NotImplementedByBackend):
    """'BACKEND does not implement loss term NAME (loss.NAME)'."""

    def __init__(self, backend: str, term: str):
        self.backend, self.term = backend, term
        super().__init__(f"{backend} does not implement loss term {term} (loss.{term})")
