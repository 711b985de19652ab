"""Every registered backend on every shipped spec: the same loss terms, gradients, weights
layout and optimizer as the NumPy oracle. Tolerances: aebench.tolerances."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from aebench import oracle
from aebench.adam import NumpyAdam
from aebench.backend_api import Batch, Noise, Step, loss_term_names
from aebench.equivalence import Case, compare_gradients_fd, compare_loss_terms, make_case
from aebench.spec import load_spec


@functools.lru_cache(maxsize=None)
def case_for(spec_name: str, dtype: str) -> Case:
    return make_case(load_spec(spec_name).replace(dtype=dtype))


def built(backend, case: Case):
    model = backend.build(case.spec)
    backend.set_weights(model, case.weights)
    return model


def failures(comparisons) -> list[str]:
    return [f"{c.quantity}: {c.error:.2e} > {c.tolerance:g}" for c in comparisons if not c.passed]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_loss_terms_equal_the_oracle(backend, spec_name: str, dtype: str) -> None:
    case = case_for(spec_name, dtype)
    got = backend.loss_terms(built(backend, case), case.batch)
    ref = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan)
    assert tuple(got) == loss_term_names(case.spec)
    assert not failures(compare_loss_terms(got, ref, dtype))


def test_float64_gradients_equal_finite_differences_of_the_oracle(backend, spec_name: str) -> None:
    case = case_for(spec_name, "float64")
    terms, grads = backend.gradients(built(backend, case), case.batch)
    assert set(grads) == {p.name for p in case.plan.params}
    assert not failures(compare_gradients_fd(case, grads))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_canonical_weights_round_trip_exactly(backend, spec_name: str, dtype: str) -> None:
    case = case_for(spec_name, dtype)
    back = backend.get_weights(built(backend, case))
    cast = np.float32 if dtype == "float32" else np.float64
    for p in case.plan.params:
        assert back[p.name].shape == p.shape
        np.testing.assert_array_equal(back[p.name], case.weights[p.name].astype(cast), err_msg=p.name)


def test_encode_and_decode_match_the_oracle(backend, spec_name: str) -> None:
    case = case_for(spec_name, "float64")
    model = built(backend, case)
    clean = Batch(case.batch.x, case.batch.labels, Noise(eps=case.batch.noise.eps))
    fwd = oracle.forward(case.spec.replace(corruption=None), case.weights, clean, case.plan)
    encoded = backend.encode(model, case.batch.x, case.batch.labels)
    if case.spec.model.family == "vae":
        np.testing.assert_allclose(encoded["mean"], fwd.mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(encoded["log_var"], fwd.log_var, rtol=1e-10, atol=1e-12)
    else:
        np.testing.assert_allclose(encoded["code"], fwd.code, rtol=1e-10, atol=1e-12)
    decoded = backend.decode(model, fwd.z, case.batch.labels)
    assert decoded.shape == case.batch.x.shape
    np.testing.assert_allclose(decoded, oracle.output(case.spec, fwd.logits), rtol=1e-10, atol=1e-12)


def test_trainer_is_the_backend_gradient_followed_by_the_reference_adam(backend, spec_name: str) -> None:
    """Three float64 steps of the trainer equal backend.gradients + the NumPy reference Adam."""
    case = case_for(spec_name, "float64")
    n = len(case.batch.x)
    steps = [Step(np.arange(n), case.batch.noise) for _ in range(3)]
    model = built(backend, case)
    losses = backend.trainer(model, case.batch.x, case.batch.labels).run(steps)
    trained = backend.get_weights(model)

    probe = built(backend, case)
    adam, weights, expected_losses = NumpyAdam(case.spec.optimizer, case.weights), case.weights, []
    for _ in steps:
        backend.set_weights(probe, weights)
        terms, grads = backend.gradients(probe, case.batch)
        expected_losses.append([terms[t] for t in loss_term_names(case.spec)])
        weights = adam.update(weights, grads)
    np.testing.assert_allclose(losses, expected_losses, rtol=1e-12)
    for name in weights:
        np.testing.assert_allclose(trained[name], weights[name], rtol=1e-9, atol=1e-12, err_msg=name)
