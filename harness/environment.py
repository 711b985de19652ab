"""Where a run happened: framework versions, device, GPU driver, CPU, threads, aebench's commit.

``environment_info`` is one plain, JSON-able dict, used as MLflow tags and as the
environment.json artifact of every run, and by the benchmark results. It never imports a
framework: versions come from the installed distributions, thread counts only from the
frameworks that are already loaded in this process.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import yaml

from aebench import __version__
from aebench.plugins.backend_api import Backend
from aebench.plugins.discovery import device_sharing_environment
from aebench.plugins.registry import plugins
from aebench.spec.types import Spec

CORE_DISTRIBUTIONS = ("numpy", "pandas", "mlflow")
"""Versions recorded beside each registered plugin's own ``distributions``."""
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "XLA_FLAGS",
)


def environment_info(backend: Optional[Backend] = None) -> dict:
    """Everything that can change a result, as a flat-ish JSON-able dict.

    Keys: aebench (version), git_commit (``git rev-parse HEAD`` of the checkout aebench runs
    from, ``+dirty`` when tracked files differ; "unknown" outside a checkout), python,
    platform, hostname, cpu (model name), cpu_count (logical), cpu_usable (this process'
    affinity), threads (thread settings from the environment and from frameworks already
    loaded), device_sharing (the variables that let several processes share a GPU:
    discovery.device_sharing_environment), versions (installed framework distributions, plus ``backend.versions()``),
    device (``backend.device()``, or "unknown" without a backend), gpu ("none" or the
    nvidia-smi names), driver (the NVIDIA driver version, or "none"), time (UTC, ISO 8601).
    """
    gpu, driver = nvidia_gpu_and_driver()
    versions = installed_versions()
    if backend is not None:
        versions.update(backend.versions())
    return {
        "aebench": __version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": thread_settings(),
        "device_sharing": device_sharing_environment(),
        "versions": versions,
        "device": backend.device() if backend is not None else "unknown",
        "gpu": gpu,
        "driver": driver,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def installed_versions(names: Optional[tuple[str, ...]] = None) -> dict[str, str]:
    """Versions of the installed distributions ``names`` (default: aebench's core and every
    plugin's framework distributions); absent ones are left out."""
    found = {}
    if names is None:
        names = CORE_DISTRIBUTIONS + tuple(d for p in plugins() for d in p.distributions)
    for name in dict.fromkeys(names):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(where: Optional[Path] = None) -> str:
    """The commit of the checkout holding aebench's code (``+dirty`` if tracked files changed),
    or "unknown" when aebench is not run from a git checkout or git is missing."""
    where = where or Path(__file__).resolve().parent
    head = _run(["git", "-C", str(where), "rev-parse", "HEAD"])
    if not head:
        return "unknown"
    changed = _run(["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"])
    return head + ("+dirty" if changed else "")


def nvidia_gpu_and_driver() -> tuple[str, str]:
    """(GPU names, driver version) from nvidia-smi; ("none", "none") without one."""
    out = _run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"])
    if not out:
        return "none", "none"
    rows = [[part.strip() for part in line.split(",")] for line in out.splitlines() if line.strip()]
    return "; ".join(r[0] for r in rows), rows[0][-1]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def thread_settings() -> dict[str, object]:
    """Thread-count variables that are set, and the thread pools of frameworks already loaded
    (each plugin's bench module reports its own)."""
    threads: dict[str, object] = {k: v for k, v in os.environ.items() if k in THREAD_VARIABLES}
    for plugin in plugins():
        threads.update(plugin.bench().thread_pools())
    return threads


def spec_yaml(spec: Spec) -> str:
    """The resolved spec as the YAML text train writes to spec.yaml."""
    return yaml.safe_dump(spec.to_dict(), sort_keys=False)


def spec_sha256(spec: Spec) -> str:
    """sha256 of the resolved spec's YAML: equal hashes mean the same variant, whatever the file."""
    return hashlib.sha256(spec_yaml(spec).encode()).hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run(command: list[str], timeout: float = 10.0) -> str:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return ""
    return proc.stdout.strip() if proc.returncode == 0 else ""
