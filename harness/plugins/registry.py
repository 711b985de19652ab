"""The backend registry: every ``aebench.backends`` entry point, available or not.

Built-in and third-party backends register the same way (an entry point naming a
``Plugin``). A backend whose framework cannot be imported is listed as unavailable with
the reason; nothing crashes and nothing is silently dropped. A backend that cannot share
this process (Keras on a second engine) is run in a worker process of its own. A backend
that loads is set to the process's precision at once, before anything is built
(aebench.plugins.precision); a worker process is given the same precision.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Optional

from aebench.errors import AebenchError, BackendUnavailable
from aebench.plugins.backend_api import Backend
from aebench.plugins.discovery import GROUP, apply_environment, registered_plugins
from aebench.plugins.plugin import NeedsOwnProcess, Plugin
from aebench.plugins.precision import apply_process_precision, check_switches, process_precision
from aebench.plugins.remote import WorkerBackend
from aebench.spec.schema import did_you_mean


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend: its name, framework and, when it cannot load, why."""

    name: str
    framework: str
    available: bool
    reason: str = ""
    note: str = ""


@dataclass(frozen=True)
class _Attempt:
    """What loading a plugin in this process gave: a backend, a reason it cannot be
    installed here, or a reason it needs a process of its own."""

    backend: Optional[Backend] = None
    unavailable: str = ""
    own_process: str = ""


def list_backends() -> list[BackendInfo]:
    """Every registered backend, sorted by name. A backend that needs its own process is
    checked by finding its modules, without starting a worker."""
    return [_info(name) for name in sorted(registered_plugins())]


def backend_info(name: str) -> BackendInfo:
    """One registered backend's BackendInfo, loading only its framework (as list_backends does for each)."""
    return _info(name)


def available_backends() -> list[str]:
    return [info.name for info in list_backends() if info.available]


def load_backend(name: str) -> Backend:
    """The backend called ``name``; BackendUnavailable with the reason if it cannot load."""
    return _backend(plugin(name).name)


def plugin(name: str) -> Plugin:
    """The registered plugin called ``name`` (its loaders reach every part of the backend)."""
    plugins = registered_plugins()
    if name not in plugins:
        raise BackendUnavailable(
            f"--backend: no backend '{name}'{did_you_mean(name, plugins)}; "
            f"registered: {', '.join(sorted(plugins)) or 'none'}"
        )
    return plugins[name]


def plugins() -> list[Plugin]:
    """Every registered plugin (nothing is loaded), sorted by name."""
    return [found for _, found in sorted(registered_plugins().items())]


@functools.cache
def _backend(name: str) -> Backend:
    attempt = _attempt(name)
    if attempt.backend is not None:
        return attempt.backend
    if attempt.unavailable:
        raise BackendUnavailable(f"backend '{name}' is unavailable: {attempt.unavailable}")

    return WorkerBackend(name)


def precision_switches(name: str) -> dict[str, str]:
    """What the framework of backend ``name`` (loaded here if it is not yet) reports of its
    precision switches now, read in the process it runs in (this one, or its worker's, which
    runs at this one's precision); AebenchError when they are not the process's precision."""
    backend = load_backend(name)
    if isinstance(backend, WorkerBackend):
        return backend.precision_switches()
    switches, problem = check_switches(plugin(name), process_precision(), f"on backend '{name}'")
    if problem:
        raise AebenchError(problem)
    return switches


def framework_of(name: str) -> str:
    """The framework a registered backend runs on (its plugin's description), without loading it."""
    plugin = registered_plugins().get(name)
    return plugin.framework if plugin is not None else name


def plugin_module(name: str) -> str:
    """The module a backend's entry point names (its folder holds known_gaps.txt)."""
    return _modules()[name]


@functools.cache
def _modules() -> dict[str, str]:
    return {ep.name: ep.module for ep in entry_points(group=GROUP)}


@functools.cache
def _attempt(name: str) -> _Attempt:
    plugin = registered_plugins()[name]
    apply_environment(plugin)
    try:
        backend = plugin.load()
    except NeedsOwnProcess as exc:
        return _Attempt(own_process=str(exc))
    except ImportError as exc:
        return _Attempt(unavailable=f"{plugin.framework} cannot be imported: {exc}{_hint(plugin)}")
    apply_process_precision(plugin)  # once, before anything is built
    return _Attempt(backend=backend)


def _hint(plugin: Plugin) -> str:
    return f" ({plugin.install_hint})" if plugin.install_hint else ""


def _info(name: str) -> BackendInfo:
    plugin, attempt = registered_plugins()[name], _attempt(name)
    if not attempt.own_process:
        return BackendInfo(name, plugin.framework, attempt.backend is not None, attempt.unavailable)
    missing = [m for m in plugin.requires if importlib.util.find_spec(m) is None]
    if missing:
        return BackendInfo(name, plugin.framework, False, f"{', '.join(missing)} not installed{_hint(plugin)}")
    return BackendInfo(name, plugin.framework, True, note=f"runs in a worker process ({attempt.own_process})")
