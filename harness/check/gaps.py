"""Known, explained gaps: one plain list per backend folder (``known_gaps.txt``).

Each line names a backend, a dtype, a quantity pattern (fnmatch, e.g. ``loss:*``), the
tolerance to use instead of the default, and the reason. A gap never skips a check; it
states the looser bound the check is held to and why, and the result says so.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib.resources
from dataclasses import dataclass
from typing import Optional

from aebench.plugins.registry import plugin_module


@dataclass(frozen=True)
class Gap:
    backend: str
    dtype: str
    quantity: str
    tolerance: float
    reason: str

    def matches(self, dtype: str, quantity: str) -> bool:
        return self.dtype == dtype and fnmatch.fnmatchcase(quantity, self.quantity)


@functools.cache
def known_gaps(backend: str) -> tuple[Gap, ...]:
    """The gaps listed for ``backend`` in its folder's known_gaps.txt (none if no file)."""
    resource = importlib.resources.files(plugin_module(backend)) / "known_gaps.txt"
    if not resource.is_file():
        return ()
    gaps = []
    for line in resource.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, dtype, quantity, tolerance, reason = line.split(maxsplit=4)
            if name == backend:
                gaps.append(Gap(name, dtype, quantity, float(tolerance), reason))
    return tuple(gaps)


def gap_for(backend: str, dtype: str, quantity: str) -> Optional[Gap]:
    return next((g for g in known_gaps(backend) if g.matches(dtype, quantity)), None)
