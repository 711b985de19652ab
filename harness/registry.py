"""The backend registry: every ``aebench.backends`` entry point, available or not.

Built-in and third-party backends register the same way (an entry point naming a
``Plugin``). A backend whose framework cannot be imported is listed as unavailable with
the reason; nothing crashes and nothing is silently dropped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Optional

from .backend_api import Backend, Plugin
from .errors import BackendUnavailable
from .schema import did_you_mean

GROUP = "aebench.backends"


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: its name, framework and, when it cannot load, why."""

    name: str
    framework: str
    available: bool
    reason: str = ""


def list_backends() -> list[BackendInfo]:
    """Every registered backend, sorted by name, each tried once per process."""
    return [_info(name) for name in sorted(_plugins())]


def available_backends() -> list[str]:
    return [info.name for info in list_backends() if info.available]


def load_backend(name: str) -> Backend:
    """The backend called ``name``; BackendUnavailable with the reason if it cannot load."""
    plugins = _plugins()
    if name not in plugins:
        raise BackendUnavailable(f"--backend: no backend '{name}'{did_you_mean(name, plugins)}; "
                                 f"registered: {', '.join(sorted(plugins)) or 'none'}")
    backend, reason = _load(name)
    if backend is None:
        raise BackendUnavailable(f"backend '{name}' is unavailable: {reason}")
    return backend


@functools.lru_cache(maxsize=None)
def _plugins() -> dict[str, Plugin]:
    found = {}
    for ep in entry_points(group=GROUP):
        plugin = ep.load()
        if not isinstance(plugin, Plugin) or plugin.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} must name a Plugin called {ep.name!r}")
        found[ep.name] = plugin
    return found


@functools.lru_cache(maxsize=None)
def _load(name: str) -> tuple[Optional[Backend], str]:
    plugin = _plugins()[name]
    try:
        return plugin.load(), ""
    except ImportError as exc:
        hint = f" ({plugin.install_hint})" if plugin.install_hint else ""
        return None, f"{plugin.framework} cannot be imported: {exc}{hint}"


def _info(name: str) -> BackendInfo:
    backend, reason = _load(name)
    return BackendInfo(name, _plugins()[name].framework, backend is not None, reason)
