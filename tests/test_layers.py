"""Every layer kind on every backend, against the float64 oracle, on small MNIST models:
loss terms, encoder and decoder outputs, and gradients against finite differences.

Each variant states one convention the frameworks do not share ('same' windows padded at the
bottom and right, average pooling's divisor at the borders, bilinear's half-pixel centres); a
backend on another convention fails its 1e-10 loss check. Every registered layer kind must
have a variant here (the coverage test fails until a new kind has one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from cases import oracle_layer

from aebench.check import equivalence as eq
from aebench.check import oracle
from aebench.layers import LAYER_KINDS, apply_layer, kind_of, plan_layer, spec_path, walk
from aebench.layers.activations import Activation
from aebench.layers.avg_pool import AvgPool
from aebench.layers.base import LayerPlan, Where
from aebench.layers.batch_norm import BatchNorm
from aebench.layers.dense import Dense
from aebench.layers.residual import Residual
from aebench.layers.upsample import Upsample
from aebench.plugins.backend_api import Batch
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import load_spec
from aebench.spec.schema import Parser
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import Spec

CONV = "{type: conv, filters: 2, kernel: 3, stride: 1, padding: same}"  # linear: pooling sees negative values
VARIANTS = {
    "dense": ["{type: flatten}", "{type: dense, units: 5, activation: relu}"],
    "conv_same_stride_2": ["{type: conv, filters: 2, kernel: 3, stride: 2, padding: same}", "{type: flatten}"],
    "conv_transpose": [
        "{type: conv, filters: 2, kernel: 3, stride: 2, padding: same}",
        "{type: conv_transpose, filters: 2, kernel: 3, stride: 2, padding: same}",
        "{type: flatten}",
    ],
    "conv_one_filter": ["{type: conv, filters: 1, kernel: 3, stride: 1, padding: same}", "{type: flatten}"],
    "conv_torch_padding_1_stride_2": ["{type: conv, filters: 2, kernel: 3, stride: 2, padding: 1}", "{type: flatten}"],
    "conv_per_side_padding": [
        "{type: conv, filters: 2, kernel: 3, stride: 2, padding: [[0, 2], [1, 0]]}",
        "{type: flatten}",
    ],
    "conv_transpose_torch_padding": [
        "{type: conv, filters: 2, kernel: 3, stride: 2, padding: 1}",
        "{type: conv_transpose, filters: 2, kernel: 3, stride: 2, padding: 1, output_padding: 1}",
        "{type: flatten}",
    ],
    "conv_transpose_output_padding_past_the_end": [
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: valid}",
        "{type: conv_transpose, filters: 2, kernel: 2, stride: 2, padding: 0, output_padding: 1}",
        "{type: flatten}",
    ],
    "reshape": ["{type: flatten}", "{type: reshape, shape: [28, 28, 1]}", "{type: flatten}"],
    "max_pool_same": [CONV, "{type: max_pool, size: 3, stride: 2, padding: same}", "{type: flatten}"],
    "max_pool_valid": [CONV, "{type: max_pool, size: 2, padding: valid}", "{type: flatten}"],
    "avg_pool_valid": [CONV, "{type: avg_pool, size: 2, padding: valid}", "{type: flatten}"],
    "avg_pool_same_real_cells": [
        CONV,
        "{type: avg_pool, size: 3, stride: 2, padding: same, count_include_pad: false}",
        "{type: flatten}",
    ],
    "avg_pool_same_whole_window": [
        CONV,
        "{type: avg_pool, size: 3, stride: 2, padding: same, count_include_pad: true}",
        "{type: flatten}",
    ],
    "upsample_nearest": [
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same}",
        "{type: upsample, factor: 2, interpolation: nearest}",
        "{type: flatten}",
    ],
    "batch_norm_flat_unbiased": [
        "{type: flatten}",
        "{type: dense, units: 5}",  # a bias straight before batch_norm: no gradient (docs/EQUIVALENCE.md)
        "{type: batch_norm, momentum: 0.1, epsilon: 1.0e-5, variance_update: unbiased}",
    ],
    "batch_norm_image_biased": [
        "{type: conv, filters: 2, kernel: 3, stride: 2, padding: same}",
        "{type: batch_norm, momentum: 0.3, epsilon: 1.0e-3, variance_update: biased, activation: {name: elu}}",
        "{type: flatten}",
    ],
    "upsample_bilinear": [
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same}",
        "{type: upsample, factor: 3, interpolation: bilinear}",
        "{type: flatten}",
    ],
    "residual_image_identity": [  # tanh: a bias straight before batch_norm has no gradient
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same}",
        "{type: residual, activation: relu, layers: ["
        "{type: conv, filters: 2, kernel: 3, stride: 1, padding: same, activation: tanh}, "
        "{type: batch_norm, momentum: 0.1, epsilon: 1.0e-5, variance_update: unbiased}]}",
        "{type: flatten}",
    ],
    "residual_image_projection": [  # 7x7x2 -> 4x4x3: a 1x1 convolution at stride 2 on the shortcut
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same}",
        "{type: residual, projection: true, activation: tanh, layers: ["
        "{type: conv, filters: 3, kernel: 3, stride: 2, padding: same, activation: relu}]}",
        "{type: flatten}",
    ],
    "residual_flat": [
        "{type: flatten}",
        "{type: dense, units: 5, activation: tanh}",
        "{type: residual, activation: elu, layers: ["
        "{type: dense, units: 4, activation: tanh}, {type: dense, units: 5}]}",
    ],
}

SPEC = """
model:
  family: ae
  encoder: [{encoder}]
  latent: {{size: 3}}
  decoder: [{{type: dense, units: 784}}, {{type: reshape, shape: [28, 28, 1]}}]
  output_activation: sigmoid
loss:
  reconstruction: {{kind: bce, weight: 1.0, features: sum, batch: mean}}
data: {{name: mnist, flatten: false}}
init: {{kernel: glorot_uniform, bias: zeros}}
optimizer: {{name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}}
train: {{batch_size: 8, epochs: 1, seed: 0}}
dtype: float64
"""


def variant_spec(tmp_path: Path, variant: str):
    path = tmp_path / f"layer_{variant}.yaml"
    path.write_text(SPEC.format(encoder=", ".join(VARIANTS[variant])))
    return load_spec(path)


def test_every_layer_kind_has_a_variant_here() -> None:
    used = {layer.type for variant in VARIANTS for layer in variant_spec_layers(variant)}
    assert used == set(LAYER_KINDS)


def variant_spec_layers(variant: str):
    return [type("L", (), yaml.safe_load(text)) for text in VARIANTS[variant]]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_layer_matches_the_oracle_on_every_backend(backend, variant: str, tmp_path: Path) -> None:
    case = eq.make_case(variant_spec(tmp_path, variant))
    comparisons = eq.check_loss_terms(backend, case) + eq.check_encode_decode(backend, case)
    comparisons += eq.check_gradients_fd(backend, case)
    assert not eq.failures(comparisons)


def test_a_bias_straight_before_batch_norm_has_no_gradient_so_it_is_judged_on_its_layer_scale(
    tmp_path: Path,
) -> None:
    """The batch mean removes the bias: its gradient is rounding, ~1e-17 of its kernel's, which
    its own scale would magnify past any tolerance (the batch_norm variants above check it)."""
    case = eq.make_case(variant_spec(tmp_path, "batch_norm_flat_unbiased"))
    kernel = max(abs(eq.fd_entry(case, "encoder.1.kernel", 406 * 5 + unit)) for unit in range(5))  # centre pixel
    bias = max(abs(eq.fd_entry(case, "encoder.1.bias", unit)) for unit in range(5))
    assert kernel > 1e-3 and bias < 1e-6 * kernel
    scales = eq.layer_gradient_scales(case.plan, {"encoder.1.kernel": np.ones((2, 2)), "encoder.1.bias": np.zeros(2)})
    assert scales["encoder.1.bias"] == scales["encoder.1.kernel"] == 1.0


def test_average_pooling_divisors_differ_at_the_borders_only() -> None:
    x = np.random.default_rng(0).random((1, 6, 6, 1))
    real, whole = (oracle_layer(AvgPool("avg_pool", 3, "same", 2, flag), x) for flag in (False, True))
    assert np.abs(real - whole)[0, :2, :2].max() < 1e-15  # interior windows: 9 real cells
    assert np.abs(real - whole)[0, 2, :, 0].min() > 1e-3  # the last row of windows reaches the padding


def test_bilinear_upsampling_uses_half_pixel_centres_not_aligned_corners() -> None:
    x = np.array([0.0, 1.0, 4.0]).reshape(1, 1, 3, 1).repeat(2, axis=1)
    out = oracle_layer(Upsample("upsample", 2, "bilinear"), x)[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.75, 3.25, 4.0])  # align_corners=True: 0, .4, .8, 1.6, 2.8, 4


# ---------------------------------------------------------------- batch_norm's conventions

BATCH_NORM_VARIANTS = ("batch_norm_flat_unbiased", "batch_norm_image_biased")
STATE_VARIANTS = (*BATCH_NORM_VARIANTS, "residual_image_identity")
"""The variants whose running statistics a trainer step updates: a batch_norm inside a residual block too."""


def batch_norm_train(x: np.ndarray, momentum: float, variance_update: str, **weights: np.ndarray):
    """The oracle's training-mode batch_norm of ``x`` (epsilon 1e-5): (output, updated state by role)."""
    layer = BatchNorm("batch_norm", momentum, 1e-5, variance_update)
    kind = kind_of(layer)
    _, params = kind.plan(layer, x.shape[1:], Where("<test>", "layer", "layer"))
    plan = LayerPlan("layer", layer, x.shape[1:], x.shape[1:], params)
    out, state = kind.train_oracle(plan, {f"layer.{role}": value for role, value in weights.items()}, x)
    return out, {name.rpartition(".")[2]: value for name, value in state.items()}


START = dict(gamma=np.ones(1), beta=np.zeros(1), running_mean=np.full(1, 10.0), running_var=np.full(1, 2.0))
COLUMN = np.array([[1.0], [2.0], [3.0], [6.0]])  # mean 3; squared deviations 4, 1, 0, 9: biased 3.5, unbiased 14/3


def test_batch_norm_training_normalises_with_the_biased_batch_variance() -> None:
    out, _ = batch_norm_train(COLUMN, 0.1, "unbiased", **START)
    np.testing.assert_allclose(out, (COLUMN - 3.0) / np.sqrt(3.5 + 1e-5), rtol=1e-15)


def test_batch_norm_momentum_is_the_new_batch_weight() -> None:
    _, state = batch_norm_train(COLUMN, 0.1, "biased", **START)
    np.testing.assert_allclose(state["running_mean"], [0.9 * 10.0 + 0.1 * 3.0], rtol=1e-15)  # Keras' 0.9: 3.7
    np.testing.assert_allclose(state["running_var"], [0.9 * 2.0 + 0.1 * 3.5], rtol=1e-15)


def test_batch_norm_running_variance_takes_the_unbiased_or_the_biased_batch_variance() -> None:
    unbiased = batch_norm_train(COLUMN, 0.1, "unbiased", **START)[1]["running_var"]
    biased = batch_norm_train(COLUMN, 0.1, "biased", **START)[1]["running_var"]
    np.testing.assert_allclose(unbiased, [0.9 * 2.0 + 0.1 * 14.0 / 3.0], rtol=1e-15)
    np.testing.assert_allclose(biased, [0.9 * 2.0 + 0.1 * 3.5], rtol=1e-15)


def test_batch_norm_evaluation_uses_the_running_statistics() -> None:
    out = oracle_layer(BatchNorm("batch_norm", 0.1, 1e-5, "unbiased"), COLUMN, **START)
    np.testing.assert_allclose(out, (COLUMN - 10.0) / np.sqrt(2.0 + 1e-5), rtol=1e-15)


def batch_norm_case(tmp_path: Path, variant: str) -> eq.Case:
    return eq.make_case(variant_spec(tmp_path, variant))


def state_of(weights: dict) -> dict:
    return {k: v for k, v in weights.items() if ".running_" in k}


@pytest.mark.parametrize("variant", BATCH_NORM_VARIANTS)
def test_batch_norm_evaluation_loss_terms_use_the_running_statistics(backend, variant, tmp_path: Path) -> None:
    """loss_terms(training=False), what the test split is scored with, against the oracle's
    evaluation mode (the check weights' running statistics are far from the batch's)."""
    case = batch_norm_case(tmp_path, variant)
    got = backend.loss_terms(eq.built(backend, case), case.batch, training=False)
    ref = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan, training=False)
    train = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan)
    assert abs(ref["total"] - train["total"]) > 1e-6 * abs(ref["total"])  # 1e4 times the 1e-10 tolerance
    assert not eq.failures(eq.compare_loss_terms(eq.Judge(backend.name, case.spec.dtype), got, ref))


@pytest.mark.parametrize("variant", BATCH_NORM_VARIANTS)
def test_batch_norm_loss_terms_and_gradients_leave_the_running_statistics(backend, variant, tmp_path: Path) -> None:
    case = batch_norm_case(tmp_path, variant)
    model = eq.built(backend, case)
    backend.loss_terms(model, case.batch)
    backend.loss_terms(model, case.batch, training=False)
    backend.gradients(model, case.batch)
    after = state_of(backend.get_weights(model))
    assert after and all(np.array_equal(after[k], v) for k, v in state_of(case.weights).items())


@pytest.mark.parametrize("variant", STATE_VARIANTS)
def test_batch_norm_trainer_step_updates_the_running_statistics_as_the_oracle(backend, variant, tmp_path) -> None:
    """One trainer step: the running statistics of its training-mode pass, the oracle's update
    rule from the case's weights. A swapped momentum or variance convention is off by 1e-2;
    1e-6 leaves room for keras-torch, whose float64 keras.ops.matmul on the CPU is 1e-8 off
    here (its Dense before the batch_norm; 3e-4 absolute on a (32, 784) @ (784, 5) product)."""
    case = batch_norm_case(tmp_path, variant)
    step = eq.trajectory_steps(case)[0]
    batch = Batch(case.train_x[step.indices], None, step.noise)
    expected = state_of(oracle.train_state(case.spec, case.weights, batch, case.plan))
    model = eq.built(backend, case)
    backend.trainer(model, case.train_x, None).run([step])
    got = state_of(backend.get_weights(model))
    assert {k: eq.scaled_error(got[k], v) for k, v in expected.items()} == pytest.approx(
        dict.fromkeys(expected, 0.0), abs=1e-6
    )


_TORCH_TRAJECTORIES: dict[str, eq.Trajectory] = {}


@pytest.mark.parametrize("variant", STATE_VARIANTS)
def test_batch_norm_trajectory_running_statistics_agree_with_torch(backend, variant, tmp_path: Path) -> None:
    """The 50-step trajectory against torch's, the running statistics among its weights."""
    case = batch_norm_case(tmp_path, variant)
    if variant not in _TORCH_TRAJECTORIES:
        _TORCH_TRAJECTORIES[variant] = eq.trajectory(load_backend("torch"), case)
    ref = _TORCH_TRAJECTORIES[variant]
    assert state_of(ref.weights)
    got = eq.trajectory(backend, case)
    judge = eq.Judge(backend.name, case.spec.dtype)
    assert not eq.failures(eq.compare_trajectories(judge, got, ref, eq.term_names(case)))


# ---------------------------------------------------------------- residual's conventions


def variant_plan(variant: str) -> ModelPlan:
    """The plan of a variant's spec (parsed from text, no file)."""
    data = yaml.safe_load(SPEC.format(encoder=", ".join(VARIANTS[variant])))
    return plan_model(Parser("<test>").parse_dataclass(Spec, {"name": "t", **data}, ""))


def residual_plan(layer: Residual, shape: tuple[int, ...]) -> LayerPlan:
    return plan_layer(layer, shape, Where("<test>", "encoder.1", "model.encoder[1]"))


def test_residual_applies_its_activation_after_the_add() -> None:
    """relu(body(x) + x), not relu(body(x)) + x: they differ where x is negative."""
    block = residual_plan(Residual("residual", (Dense("dense", 2),), activation=Activation("relu")), (2,))
    x = np.array([[-1.0, 2.0]])
    weights = {"encoder.1.layers.0.kernel": 0.5 * np.eye(2), "encoder.1.layers.0.bias": np.zeros(2)}
    out = apply_layer(block, weights, x)[1]
    np.testing.assert_array_equal(out, [[0.0, 3.0]])  # relu(1.5 x); activation before the add: [-1, 3]


def test_residual_layers_continue_the_block_s_names_and_spec_paths() -> None:
    inner = Residual("residual", (Dense("dense", 3),), projection=True)
    block = residual_plan(Residual("residual", (Dense("dense", 4), inner), projection=True), (2,))
    names = [p.name for p in block.params]
    assert names == [
        "encoder.1.layers.0.kernel",
        "encoder.1.layers.0.bias",
        "encoder.1.layers.1.layers.0.kernel",
        "encoder.1.layers.1.layers.0.bias",
        "encoder.1.layers.1.projection.kernel",
        "encoder.1.layers.1.projection.bias",
        "encoder.1.projection.kernel",
        "encoder.1.projection.bias",
    ]
    paths = [spec_path(p.name) for p in walk([block])]
    assert paths == [
        "model.encoder[1]",
        "model.encoder[1].layers[0]",
        "model.encoder[1].layers[1]",
        "model.encoder[1].layers[1].layers[0]",
        "model.encoder[1].layers[1].projection",
        "model.encoder[1].projection",
    ]
    assert [p.shape for p in block.params][-2:] == [(2, 3), (3,)]  # the projection: dense 2 -> 3


def test_residual_projection_on_images_is_a_1x1_convolution_at_the_stride_that_fits() -> None:
    block = variant_plan("residual_image_projection").encoder[1]
    projection = block.children[-1]
    assert (projection.layer.type, projection.layer.kernel, projection.layer.stride) == ("conv", 1, 2)
    assert (projection.in_shape, projection.out_shape) == ((7, 7, 2), (4, 4, 3))


def test_residual_counts_the_work_and_memory_of_the_layers_inside() -> None:
    block = variant_plan("residual_image_projection").encoder[1]
    conv, projection = block.children
    assert kind_of(block.layer).macs(block) == 4 * 4 * 3 * 9 * 2 + 4 * 4 * 3 * 2
    assert kind_of(block.layer).activation_values(block) == 3 * 4 * 4 * 3  # the conv's, the projection's, the sum
    assert block.params == conv.params + projection.params


def test_residual_with_its_activation_before_the_add_fails_the_check(monkeypatch, tmp_path: Path) -> None:
    """torch's block computing relu(body(x)) + x instead of relu(body(x) + x) must fail the check."""
    if "torch" not in available_backends():
        pytest.skip("torch is not available")
    from aebench.backends.torch import model

    def activation_before_add(self, x):
        if not isinstance(self.op, model.Residual):
            return self.act(self.op(x))
        h = x
        for module in self.op.layers:
            h = module(h)
        return self.act(h) + (x if self.op.projection is None else self.op.projection(x))

    case = eq.make_case(variant_spec(tmp_path, "residual_image_identity"))
    backend = load_backend("torch")
    assert not eq.failures(eq.check_loss_terms(backend, case))
    monkeypatch.setattr(model.Activated, "forward", activation_before_add)
    assert eq.failures(eq.check_loss_terms(backend, case))
