"""Every activation on every backend, against the float64 oracle: the loss terms, and the
gradients against finite differences, on a small dense autoencoder whose hidden layers and
code use it and whose contractive term needs its slope. The oracle pins each stated
convention (gelu's form, elu's alpha), so a backend on another convention fails here."""

from __future__ import annotations

import math
import typing
from pathlib import Path

import numpy as np
import pytest

from aebench.check import equivalence as eq
from aebench.layers.activations import Activation, ActivationName, activate, activation_slope
from aebench.spec.load import load_spec

VARIANTS = {
    "linear": "linear",
    "relu": "relu",
    "leaky_relu": "{name: leaky_relu, negative_slope: 0.3}",
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "elu": "{name: elu, alpha: 0.5}",
    "gelu_exact": "{name: gelu, approximate: exact}",
    "gelu_tanh": "{name: gelu, approximate: tanh}",
    "silu": "silu",
}

SPEC = """
model:
  family: ae
  encoder: [{{type: dense, units: 6, activation: {act}}}]
  latent: {{size: 3, activation: {act}}}
  decoder: [{{type: dense, units: 6, activation: {act}}}, {{type: dense, units: 2}}]
  output_activation: linear
loss:
  reconstruction: {{kind: mse, weight: 1.0, features: mean, batch: mean}}
  contractive: {{weight: 0.1, batch: mean}}
data: {{name: height_weight, n_train: 64, n_test: 16, seed: 0}}
init: {{kernel: glorot_uniform, bias: zeros}}
optimizer: {{name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}}
train: {{batch_size: 8, epochs: 1, seed: 0}}
dtype: float64
"""


def test_every_activation_has_a_variant_here() -> None:
    named = {v.split(",")[0].removeprefix("{name: ") for v in VARIANTS.values()}
    assert named == set(typing.get_args(ActivationName))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_activation_matches_the_oracle_on_every_backend(backend, variant: str, tmp_path: Path) -> None:
    path = tmp_path / f"act_{variant}.yaml"
    path.write_text(SPEC.format(act=VARIANTS[variant]))
    case = eq.make_case(load_spec(path))
    comparisons = eq.check_loss_terms(backend, case) + eq.check_gradients_fd(backend, case)
    assert not eq.failures(comparisons)


def test_gelu_forms_differ_beyond_every_tolerance() -> None:
    """The exact and tanh forms differ by up to about 5e-4: a backend on the wrong form fails the 1e-10 check."""
    x = np.linspace(-4, 4, 801)
    exact, approx = (activate(Activation("gelu", approximate=form), x) for form in ("exact", "tanh"))
    assert 1e-4 < np.abs(exact - approx).max() < 1e-3
    assert exact[600] == pytest.approx(0.5 * x[600] * (1 + math.erf(x[600] / math.sqrt(2))), rel=1e-15)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_oracle_slopes_are_the_derivatives_of_the_activations(variant: str, tmp_path: Path) -> None:
    path = tmp_path / f"act_{variant}.yaml"
    path.write_text(SPEC.format(act=VARIANTS[variant]))
    act = load_spec(path).model.latent.activation
    x, h = np.linspace(-3, 3, 61) + 0.013, 1e-6  # off the kinks of relu and leaky_relu
    central = (activate(act, x + h) - activate(act, x - h)) / (2 * h)
    np.testing.assert_allclose(activation_slope(act, x), central, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize(
    ("activation", "message"),
    [
        ("gelu", "gelu needs its form stated"),
        ("{name: relu, alpha: 1.0}", "alpha: only allowed with elu, not relu"),
        ("{name: elu, alpha: -1.0}", "alpha: must be a finite number >= 0"),
        ("{name: gelu, approximate: erf}", "approximate"),
    ],
)
def test_activation_settings_are_checked(activation: str, message: str, tmp_path: Path) -> None:
    from aebench.errors import SpecError

    path = tmp_path / "bad.yaml"
    path.write_text(SPEC.format(act=activation))
    with pytest.raises(SpecError, match=message):
        load_spec(path)


@pytest.mark.parametrize("output", ["linear", "sigmoid", "tanh"])
def test_output_activation_matches_the_oracle_on_every_backend(backend, output: str, tmp_path: Path) -> None:
    path = tmp_path / f"out_{output}.yaml"
    path.write_text(SPEC.format(act="relu").replace("output_activation: linear", f"output_activation: {output}"))
    case = eq.make_case(load_spec(path))
    comparisons = eq.check_loss_terms(backend, case) + eq.check_encode_decode(backend, case)
    assert not eq.failures(comparisons)
