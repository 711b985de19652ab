"""Errors that reach the user as one line and a non-zero exit, never a traceback."""

from __future__ import annotations


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
