"""Parametrizes every test over the registered backends and the shipped specs.

A test that takes ``backend_name`` runs once per registered backend; an unavailable one
is skipped with the registry's reason. A test that takes ``spec_name`` runs once per
shipped spec; one that takes ``built_spec_name`` once per spec of a set that together has
every part any shipped spec is built from (cases.covering_specs(cases.built_parts): every
layer kind, activation, loss term, corruption and family), and ``optimizer_spec_name`` once
per spec of a set that has every optimizer setting and kind of state; ``trained_spec_name`` once
per spec of a set that has both (cases.trained_parts). New specs and backends are tested with
no test edits (as timm's list_models() drives its tests).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cases import (  # tests/ is on sys.path (pytest prepend import mode)
    built_parts,
    covering_specs,
    optimizer_parts,
    trained_parts,
)

from aebench.plugins.registry import list_backends
from aebench.spec.load import list_specs

FULL_MNIST_VARIABLE = "AEBENCH_TEST_MNIST"  # .ci/run sets it; a developer points it at a Keras-layout mnist.npz


def backend_params() -> list:
    return [
        pytest.param(
            info.name,
            id=info.name,
            marks=() if info.available else pytest.mark.skip(reason=f"{info.name}: {info.reason}"),
        )
        for info in list_backends()
    ]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_name" in metafunc.fixturenames:
        metafunc.parametrize("backend_name", backend_params())
    if "spec_name" in metafunc.fixturenames:
        metafunc.parametrize("spec_name", list_specs())
    if "built_spec_name" in metafunc.fixturenames:
        config = metafunc.config
        timed = config.getoption("benchmark_enable") or not config.getoption("benchmark_disable")
        metafunc.parametrize("built_spec_name", list_specs() if timed else covering_specs(built_parts))
    if "optimizer_spec_name" in metafunc.fixturenames:
        metafunc.parametrize("optimizer_spec_name", covering_specs(optimizer_parts))
    if "trained_spec_name" in metafunc.fixturenames:
        metafunc.parametrize("trained_spec_name", covering_specs(trained_parts))


@pytest.fixture
def backend(backend_name: str):
    from aebench.plugins.registry import load_backend

    return load_backend(backend_name)


@pytest.fixture(autouse=True)
def _isolated_mnist_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Tests see no user MNIST (no $AEBENCH_MNIST, an empty Keras cache) unless they set one,
    so every run uses the bundled subset and is the same on every machine."""
    monkeypatch.delenv("AEBENCH_MNIST", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras_home")))


@pytest.fixture(autouse=True)
def _isolated_mlflow_store(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Runs that tests make (train, bench) log to a store of their own, never to ./mlflow.db;
    subprocesses inherit it through MLFLOW_TRACKING_URI."""
    store = tmp_path_factory.mktemp("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.chdir(store)


@pytest.fixture(autouse=True, scope="session")
def _isolated_peak_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Device peaks measured while the suite loads the machine stay out of the user's cache
    (~/.cache/aebench), which a real campaign divides by."""
    os.environ["AEBENCH_CACHE"] = str(tmp_path_factory.mktemp("aebench_cache"))


@pytest.fixture
def full_mnist() -> Path:
    """The full MNIST named by $AEBENCH_TEST_MNIST, else skip."""
    named = os.environ.get(FULL_MNIST_VARIABLE, "")
    if not named or not Path(named).is_file():
        pytest.skip(f"full MNIST not found: set {FULL_MNIST_VARIABLE} to a Keras-layout mnist.npz (got {named!r})")
    return Path(named)
