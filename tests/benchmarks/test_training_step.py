"""One training step per spec and backend, timed by pytest-benchmark with a device sync.

The step is the bench module's ``compiled`` mode on data already on the device, exactly
what a campaign cell times; the compilation happens in the warm-up rounds. The suite runs with
``--benchmark-disable`` (pyproject.toml): the step then runs once, at its test size, for each
spec of a set that has every part a shipped spec is built from (``built_spec_name``: every layer
kind, activation, loss term, corruption and family; tests/conftest.py), to show that each part
compiles and gives a finite loss on each backend; a spec that only recombines parts is left out
(a cold compile of torch's step takes 10 to 45 s here). Time them with ``pytest tests/benchmarks
--benchmark-enable --benchmark-json=steps.json``, at the shipped sizes, and ``aebench report steps.json``.
Backends that must run in a process of their own (Keras on a second engine) are timed by
``aebench bench`` instead and skipped here with that reason.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import suite_spec  # tests/ is on sys.path (pytest prepend import mode)

from aebench.bench.data import make_bench_data
from aebench.bench.flops import training_step_flops
from aebench.data.datasets import load_dataset
from aebench.plugins.bench_api import Precision
from aebench.plugins.registry import plugin
from aebench.spec.load import load_spec
from aebench.spec.shapes import plan_model

MODE = "compiled"
ROUNDS, WARMUP_ROUNDS = 10, 2


def test_training_step(benchmark, backend, backend_name: str, built_spec_name: str) -> None:
    spec_name = built_spec_name
    from aebench.plugins.remote import WorkerBackend

    if isinstance(backend, WorkerBackend):
        pytest.skip(f"{backend_name} runs in a worker process here; time it with 'aebench bench'")
    bench = plugin(backend_name).bench()
    reason = bench.unsupported(backend, MODE)
    if reason:
        pytest.skip(f"{backend_name} {MODE}: {reason}")
    spec = load_spec(spec_name) if benchmark.enabled else suite_spec(spec_name)
    rounds = (ROUNDS + WARMUP_ROUNDS) if benchmark.enabled else 1  # disabled: pedantic calls the step once
    batch_size = spec.train.batch_size
    data = make_bench_data(spec, load_dataset(spec), batch_size, max_steps=rounds + 1)
    runner = bench.prepare(backend, spec, MODE, data, Precision(), steps_per_call=1)

    handles = []

    def one_synced_step():
        handles.append(runner.dispatch())
        runner.wait(handles[-1])

    benchmark.extra_info.update(
        spec=spec_name,
        backend=backend_name,
        mode=MODE,
        batch_size=batch_size,
        dtype=spec.dtype,
        device=backend.device(),
        flops_per_step=training_step_flops(plan_model(spec), batch_size),
    )
    benchmark.pedantic(one_synced_step, rounds=ROUNDS, warmup_rounds=WARMUP_ROUNDS, iterations=1)
    losses = runner.losses(handles)  # read back only now, outside the timed rounds
    assert len(losses) == rounds * runner.steps_per_call
    assert np.isfinite(losses).all(), f"non-finite loss in {losses}"
