"""Processes that share one GPU: every process the harness starts gets the variables that
make JAX (and TensorFlow) allocate on demand, set before the framework is imported, and the
values are recorded. CPU tests of logic that matters on a GPU (issue 10, item 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aebench.bench.campaign import CampaignConfig, run_campaign
from aebench.bench.timing import Protocol
from aebench.environment import environment_info
from aebench.plugins.discovery import child_environment, device_sharing_environment
from aebench.plugins.registry import plugins

PREALLOCATE = "XLA_PYTHON_CLIENT_PREALLOCATE"
SHORT = Protocol(warmup_seconds=0.05, min_warmup_calls=1, blocks=2, block_seconds=0.05, max_steps=2000)


def plugin_variables() -> dict[str, str]:
    wanted: dict[str, str] = {}
    for found in plugins():
        wanted.update(found.environment)
    return wanted


def test_jax_plugins_ask_for_allocation_on_demand() -> None:
    by_name = {p.name: p for p in plugins()}
    for name in ("jax", "keras-jax"):
        assert by_name[name].environment.get(PREALLOCATE) == "false", name


def test_child_processes_get_the_variables_and_a_user_value_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in plugin_variables():
        monkeypatch.delenv(var, raising=False)
    assert {k: child_environment()[k] for k in plugin_variables()} == plugin_variables()
    monkeypatch.setenv(PREALLOCATE, "true")
    assert child_environment()[PREALLOCATE] == "true"
    assert device_sharing_environment()[PREALLOCATE] == "true"


def test_loading_a_backend_sets_its_variables_before_the_framework_imports() -> None:
    """In a fresh process without the variable: the jax plugin sets it, then jax reads it."""
    probe = (
        "import os\n"
        "from aebench.plugins.registry import load_backend\n"
        "try:\n    load_backend('jax')\nexcept Exception:\n    pass\n"
        f"print(os.environ.get({PREALLOCATE!r}))\n"
    )
    env = {k: v for k, v in child_environment().items() if k != PREALLOCATE}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "false", out.stderr


def test_environment_records_the_sharing_variables() -> None:
    assert environment_info()["device_sharing"] == device_sharing_environment()


def test_a_cell_process_runs_with_the_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real campaign cell: its process saw every plugin's variable, though this one has none."""
    for var in plugin_variables():
        monkeypatch.delenv(var, raising=False)
    backend = next(p.name for p in plugins() if p.name in ("torch", "jax"))
    config = CampaignConfig(
        specs=("vae_toy",), backends=(backend,), modes=("eager",), batch_sizes=(32,), name="env", protocol=SHORT
    )
    store = run_campaign(config, tmp_path)
    record = store.record(store.table()["key"][0])
    assert record["status"] == "ok", record.get("reason")
    assert json.loads(record["device_sharing"]) == plugin_variables()
