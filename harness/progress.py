"""A small progress bar on stderr: redrawn in place on a terminal, silent otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Optional, TextIO, TypeVar

T = TypeVar("T")


class Progress:
    """Draws ``label [#####.....] 12/60 5.1 it/s`` while an iterable is consumed."""

    def __init__(self, stream: Optional[TextIO] = None, enabled: Optional[bool] = None, width: int = 30):
        """``stream``: default sys.stderr as it is when the Progress is made (not when this module was imported)."""
        self.stream, self.width = stream or sys.stderr, width
        self.enabled = self.stream.isatty() if enabled is None else enabled

    def wrap(self, items: Iterable[T], total: int, label: str) -> Iterator[T]:
        start = time.perf_counter()
        for done, item in enumerate(items, start=1):
            yield item
            if self.enabled:
                rate = done / max(time.perf_counter() - start, 1e-9)
                filled = self.width * done // max(total, 1)
                bar = "#" * filled + "." * (self.width - filled)
                self.stream.write(f"\r{label} [{bar}] {done}/{total} {rate:.1f} it/s")
                self.stream.flush()
        if self.enabled:
            self.stream.write("\r" + " " * (len(label) + self.width + 30) + "\r")

    def line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()
