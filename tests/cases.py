"""Cases and commands shared by the test modules (tests/ is on sys.path: pytest's prepend mode)."""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import pytest

from aebench.check import equivalence as eq
from aebench.plugins.registry import available_backends
from aebench.spec.load import load_spec


@functools.cache
def case_for(spec_name: str, dtype: str) -> eq.Case:
    """The shipped spec's equivalence case in ``dtype``, built once per test session."""
    return eq.make_case(load_spec(spec_name).replace(dtype=dtype))


def cheap_backend() -> str:
    """The backend whose cells start fastest here (torch, else jax); skips without either."""
    backend = next((b for b in ("torch", "jax") if b in available_backends()), None)
    if backend is None:
        pytest.skip("neither torch nor jax is available")
    return backend


def bench_command(results: Path, name: str, *flags: str, batch: str = "16") -> list[str]:
    """``aebench bench`` of vae_toy, eager, on the cheap backend, as campaign ``name`` in ``results``."""
    return [
        sys.executable,
        "-m",
        "aebench.cli",
        "bench",
        "--specs",
        "vae_toy",
        "--backends",
        cheap_backend(),
        "--modes",
        "eager",
        "--batch-sizes",
        batch,
        "--name",
        name,
        "--results",
        str(results),
        *flags,
    ]
