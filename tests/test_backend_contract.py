"""Every registered backend on every shipped spec against the NumPy oracle: loss terms,
encoder and decoder outputs, float64 gradients, weight layouts and the trainer.
Tolerances: aebench.check.tolerances; known gaps: each backend's known_gaps.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cases import backend_gradients, case_for  # tests/ is on sys.path (pytest prepend import mode)

from aebench.check import equivalence as eq
from aebench.plugins.adam import NumpyAdam
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.plugins.bench_api import MODE_NAMES, Precision
from aebench.plugins.plugin import BACKEND_MODULES
from aebench.plugins.registry import plugin, plugins


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_terms_equal_the_oracle(backend, spec_name: str, dtype: str) -> None:
    case = case_for(spec_name, dtype)
    comparisons = eq.check_loss_terms(backend, case)
    assert [c.quantity for c in comparisons] == [f"loss:{t}" for t in loss_term_names(case.spec)]
    assert not eq.failures(comparisons)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_encode_and_decode_equal_the_oracle(backend, spec_name: str, dtype: str) -> None:
    assert not eq.failures(eq.check_encode_decode(backend, case_for(spec_name, dtype)))


def test_float64_gradients_equal_finite_differences_of_the_oracle(backend, spec_name: str) -> None:
    case = case_for(spec_name, "float64")
    judge = eq.Judge(backend.name, "float64")
    comparisons = eq.compare_gradients_fd(judge, case, backend_gradients(backend.name, spec_name, "float64"))
    assert len(comparisons) == len(case.plan.trainable)
    assert not eq.failures(comparisons)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_canonical_weights_round_trip_exactly(backend, spec_name: str, dtype: str) -> None:
    case = case_for(spec_name, dtype)
    back = backend.get_weights(eq.built(backend, case))
    cast = np.float32 if dtype == "float32" else np.float64
    for p in case.plan.params:
        assert back[p.name].shape == p.shape
        np.testing.assert_array_equal(back[p.name], case.weights[p.name].astype(cast), err_msg=p.name)


def test_trainer_is_the_backend_gradient_followed_by_the_reference_adam(backend, trained_spec_name: str) -> None:
    """Three float64 steps of the trainer equal backend.gradients + the NumPy reference Adam
    (the trainable weights: the state a trainer updates has no gradient; the batch_norm and
    vector_quantizer tests of tests/test_layers.py check its updates). Each step's gradients are
    taken from the state the trainer's step started from: batch_norm's training pass does not
    read its running statistics, but a quantizer with moving averages picks codes by its codebook.
    On the specs that cover every built and optimizer part (tests/conftest.py): the gradients
    themselves are checked on every spec."""
    case = case_for(trained_spec_name, "float64")
    n, steps_per_epoch = len(case.batch.x), 2  # a per-epoch schedule steps once in the three
    steps = [Step(np.arange(n), case.batch.noise) for _ in range(3)]
    model = eq.built(backend, case)
    trainer = backend.trainer(model, case.batch.x, case.batch.labels, steps_per_epoch)
    states, rows = [], []
    for step in steps:
        states.append({p.name: backend.get_weights(model)[p.name] for p in case.plan.state})
        rows.append(trainer.run([step])[0])
    losses = np.asarray(rows)
    trained = backend.get_weights(model)

    probe = eq.built(backend, case)
    weights = {p.name: case.weights[p.name] for p in case.plan.trainable}
    adam, expected_losses, rounding_only = NumpyAdam(case.spec.optimizer, weights, steps_per_epoch), [], set()
    for state in states:
        backend.set_weights(probe, {**case.weights, **state, **weights})
        terms, grads = backend.gradients(probe, case.batch)
        expected_losses.append([terms[t] for t in loss_term_names(case.spec)])
        scales = eq.layer_gradient_scales(case.plan, grads)
        rounding_only |= {k for k in weights if np.abs(grads[k]).max() <= 1e-12 * scales[k]}
        weights = adam.update(weights, grads)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    lr = case.spec.optimizer.learning_rate
    for name in weights:
        # a gradient of pure rounding (a bias straight before batch_norm) is a different rounding
        # in the trainer's compiled step, and Adam scales it to a step of up to lr: bounded only
        tolerance = dict(rtol=0, atol=len(steps) * lr) if name in rounding_only else dict(rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(trained[name], weights[name], **tolerance, err_msg=name)


def test_the_stock_optimizer_is_the_framework_adam_and_stays_close(backend, optimizer_spec_name: str) -> None:
    """implementation: stock trains with the framework's own Adam: the same start, a falling
    loss, and for torch exactly the reference Adam. Elsewhere it is a different optimizer
    (Keras' epsilon-hat moves contractive_ae's loss 2% off in 5 steps; Optax keeps float32
    bias corrections), which is why the reference Adam is the default (docs/EQUIVALENCE.md, 'Adam').
    Run on specs that together have every optimizer setting and kind of state (tests/conftest.py);
    tests/test_optimizer.py checks the stock optimizers' decay and schedules."""
    from dataclasses import replace

    case = case_for(optimizer_spec_name, "float64")
    stock_spec = case.spec.replace(optimizer=replace(case.spec.optimizer, implementation="stock"))
    stock_case = replace(case, spec=stock_spec)
    steps = [Step(np.arange(len(case.batch.x)), case.batch.noise) for _ in range(5)]
    runs = {}
    for name, c in (("reference", case), ("stock", stock_case)):
        runs[name] = backend.trainer(eq.built(backend, c), c.batch.x, c.batch.labels).run(steps)
    assert np.isfinite(runs["stock"]).all()
    np.testing.assert_allclose(runs["stock"][0], runs["reference"][0], rtol=1e-12)
    assert runs["stock"][-1, 0] < runs["stock"][0, 0]
    if backend.name == "torch":
        np.testing.assert_array_equal(runs["stock"], runs["reference"])


@pytest.mark.parametrize("name", [p.name for p in plugins()])
def test_every_plugin_reaches_the_same_modules_and_modes(name: str) -> None:
    """The contract every backend folder keeps (a missing framework does not matter: the
    bench module imports none), so a new backend is checked with no test edits."""
    found = plugin(name)
    bench = found.bench()
    assert tuple(bench.MODES) == MODE_NAMES, f"{name}: modes {tuple(bench.MODES)}"
    assert all(callable(getattr(bench, f, None)) for f in ("unsupported", "prepare", "thread_pools"))
    folder = Path(str(bench.__file__)).parent
    missing = [m for m in BACKEND_MODULES if not (folder / f"{m}.py").is_file()]
    assert not missing, f"{name}: {folder} lacks {missing}"


def test_the_peak_module_times_a_matmul(backend_name: str) -> None:
    peak = plugin(backend_name).peak()
    assert peak.timed_matmuls(64, "float32", Precision(), 2) > 0
