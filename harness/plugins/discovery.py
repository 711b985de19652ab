"""The registered plugins (entry point group ``aebench.backends``) and the environment they ask for.

Loading the entry points imports each backend's ``__init__`` only (no framework), so the
registry, the worker client and the environment record can all read them.
"""

from __future__ import annotations

import functools
import os
from importlib.metadata import entry_points

from aebench.plugins.plugin import Plugin

GROUP = "aebench.backends"


@functools.cache
def registered_plugins() -> dict[str, Plugin]:
    """Every plugin named by an entry point of GROUP, by name; TypeError on a malformed one."""
    found = {}
    for ep in entry_points(group=GROUP):
        plugin = ep.load()
        if not isinstance(plugin, Plugin) or plugin.name != ep.name:
            raise TypeError(f"entry point {ep.name} = {ep.value} must name a Plugin called {ep.name!r}")
        found[ep.name] = plugin
    return found


def device_sharing_environment() -> dict[str, str]:
    """Every registered plugin's ``environment``, with the values this process has (a
    variable the user set wins over the plugin's default): what child processes get and
    what results record."""
    wanted: dict[str, str] = {}
    for found in registered_plugins().values():
        wanted.update(found.environment)
    return {var: os.environ.get(var, default) for var, default in sorted(wanted.items())}


def child_environment() -> dict[str, str]:
    """The environment for a process the harness starts (cells, workers): this one's, with
    the device-sharing variables set, so frameworks read them at their first import."""
    return {**os.environ, **device_sharing_environment()}


def apply_environment(plugin: Plugin) -> None:
    """Set the plugin's variables in this process (where unset) before its framework loads."""
    for var, value in plugin.environment.items():
        os.environ.setdefault(var, value)
