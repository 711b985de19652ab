"""Every layer kind on every backend, against the float64 oracle, on small MNIST models:
loss terms, encoder and decoder outputs, and gradients against finite differences.

Each variant states one convention the frameworks do not share ('same' windows padded at the
bottom and right, average pooling's divisor at the borders, bilinear's half-pixel centres); a
backend on another convention fails its 1e-10 loss check. Every registered layer kind must
have a variant here (the coverage test fails until a new kind has one)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from cases import cheap_backend, oracle_layer

from aebench.bench.flops import training_step_flops
from aebench.check import equivalence as eq
from aebench.check import oracle
from aebench.check.tolerances import FD_RETRY_DIVISOR, FD_STEP, FD_TOL, TRAJECTORY_STEPS
from aebench.data.noise import draw_noise, stream
from aebench.layers import LAYER_KINDS, apply_layer, kind_of, plan_layer, spec_path, walk
from aebench.layers.activations import Activation
from aebench.layers.avg_pool import AvgPool
from aebench.layers.base import LayerPlan, Where
from aebench.layers.batch_norm import BatchNorm
from aebench.layers.dense import Dense
from aebench.layers.dropout import Dropout
from aebench.layers.residual import Residual
from aebench.layers.upsample import Upsample
from aebench.plugins.adam import NumpyAdam
from aebench.plugins.backend_api import Batch, loss_term_names
from aebench.plugins.registry import available_backends, load_backend
from aebench.spec.load import builtin_specs_dir, load_spec
from aebench.spec.memory import largest_size_field
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
    "residual_flat_with_dropout": [  # the block passes the batch's draws on to the dropout inside
        "{type: flatten}",
        "{type: dense, units: 5, activation: tanh}",
        "{type: residual, layers: [{type: dense, units: 5, activation: tanh}, {type: dropout, rate: 0.4}]}",
    ],
    "dropout": [
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same, activation: tanh}",
        "{type: dropout, rate: 0.3}",  # image features: the draw is NHWC, torch's activations NCHW
        "{type: flatten}",
        "{type: dense, units: 5, activation: tanh}",
        "{type: dropout, rate: 0.5}",
    ],
}

VQ_LOSS = (
    "codebook: {weight: 1.0, features: mean, batch: mean}\n  commitment: {weight: 0.25, features: sum, batch: mean}"
)
OUTPUT = ["{type: flatten}", "{type: dense, units: 784}", "{type: reshape, shape: [28, 28, 1]}"]


@dataclasses.dataclass(frozen=True)
class InDecoder:
    """A variant whose layers belong in the decoder: the code's size, the decoder's layers and
    the loss terms they need (YAML), after a flat encoder."""

    latent: int
    layers: list[str]
    loss: str = ""


DECODER_VARIANTS = {
    "vector_quantizer_gradient": InDecoder(  # 3 vectors of 2 from 5 codes, the codebook by gradient
        6, ["{type: reshape, shape: [3, 2]}", "{type: vector_quantizer, codes: 5, update: gradient}", *OUTPUT], VQ_LOSS
    ),
    "vector_quantizer_ema_image": InDecoder(  # a 2x2 grid of 2-d vectors: torch quantizes NCHW in NHWC order
        8,
        [
            "{type: reshape, shape: [2, 2, 2]}",
            "{type: vector_quantizer, codes: 4, update: ema, decay: 0.9, epsilon: 1.0e-3}",
            *OUTPUT,
        ],
        VQ_LOSS.split("\n")[1].strip(),
    ),
}
"""The layer variants in the decoder, after a flat encoder: a vector quantizer quantizes the code."""

SPEC = """
model:
  family: ae
  encoder: [{encoder}]
  latent: {{size: {latent}}}
  decoder: [{decoder}]
  output_activation: sigmoid
loss:
  reconstruction: {{kind: bce, weight: 1.0, features: sum, batch: mean}}
  {loss}
data: {{name: mnist, flatten: false}}
init: {{kernel: glorot_uniform, bias: zeros}}
optimizer: {{name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}}
train: {{batch_size: 8, epochs: 1, seed: 0}}
dtype: float64
"""


def spec_text(encoder: list[str], decoder: InDecoder = InDecoder(3, OUTPUT[1:])) -> str:
    """SPEC with ``encoder`` (YAML flow mappings) as its encoder and ``decoder``'s code size, layers and terms."""
    return SPEC.format(
        encoder=", ".join(encoder), latent=decoder.latent, decoder=", ".join(decoder.layers), loss=decoder.loss
    )


def spec_with_encoder(tmp_path: Path, name: str, layers: list[str]) -> Spec:
    """SPEC with ``layers`` (YAML flow mappings) as its encoder, written as ``name``.yaml."""
    path = tmp_path / f"{name}.yaml"
    path.write_text(spec_text(layers))
    return load_spec(path)


def variant_text(variant: str) -> str:
    if variant in DECODER_VARIANTS:
        return spec_text(["{type: flatten}"], DECODER_VARIANTS[variant])
    return spec_text(VARIANTS[variant])


def variant_spec(tmp_path: Path, variant: str):
    path = tmp_path / f"layer_{variant}.yaml"
    path.write_text(variant_text(variant))
    return load_spec(path)


ALL_VARIANTS = sorted([*VARIANTS, *DECODER_VARIANTS])


def test_every_layer_kind_has_a_variant_here() -> None:
    used = {layer.type for variant in ALL_VARIANTS for layer in variant_spec_layers(variant)}
    assert used == set(LAYER_KINDS)


def variant_spec_layers(variant: str):
    texts = DECODER_VARIANTS[variant].layers if variant in DECODER_VARIANTS else VARIANTS[variant]
    return [type("L", (), yaml.safe_load(text)) for text in texts]


@pytest.mark.parametrize("variant", ALL_VARIANTS)
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
STATE_VARIANTS = (*BATCH_NORM_VARIANTS, "residual_image_identity", "vector_quantizer_ema_image")
"""The variants whose state a trainer step updates: running statistics (a batch_norm inside a
residual block too), and a vector quantizer's moving averages and codebook."""


def batch_norm_train(x: np.ndarray, momentum: float, variance_update: str, **weights: np.ndarray):
    """The oracle's training-mode batch_norm of ``x`` (epsilon 1e-5): (output, updated state by role)."""
    layer = BatchNorm("batch_norm", momentum, 1e-5, variance_update)
    kind = kind_of(layer)
    _, params = kind.plan(layer, x.shape[1:], Where("<test>", "layer", "layer"))
    plan = LayerPlan("layer", layer, x.shape[1:], x.shape[1:], params)
    out, state = kind.train_oracle(plan, {f"layer.{role}": value for role, value in weights.items()}, x, {})
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


STATE_ROLES = ("running_mean", "running_var", "embeddings", "cluster_size", "embedding_sum")


def state_of(weights: dict) -> dict:
    """The arrays of ``weights`` that are state in the variants here (a trainable codebook only
    in vector_quantizer_gradient, which no state test takes)."""
    return {k: v for k, v in weights.items() if k.rpartition(".")[2] in STATE_ROLES}


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


@pytest.mark.parametrize("variant", (*BATCH_NORM_VARIANTS, "vector_quantizer_ema_image"))
def test_batch_norm_loss_terms_and_gradients_leave_the_running_statistics(backend, variant, tmp_path: Path) -> None:
    """Training-mode loss terms and gradients leave the state as it was: batch_norm's running
    statistics, a vector quantizer's moving averages and codebook."""
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


_TORCH_TRAJECTORIES: dict[tuple[str, str], eq.Trajectory] = {}
TRAJECTORY_VARIANTS = (*STATE_VARIANTS, "dropout", "residual_flat_with_dropout")
"""The variants whose trainer steps carry what loss terms alone do not show: running statistics
updated every step, and dropout masks drawn anew for every step."""


@pytest.mark.parametrize("variant", TRAJECTORY_VARIANTS)
def test_fifty_steps_with_running_statistics_or_dropout_agree_with_torch(backend, variant, tmp_path: Path) -> None:
    """The 50-step trajectory against torch's: the running statistics among its weights, each
    step's dropout draws injected."""
    if backend.name == "torch":
        pytest.skip("torch is the reference; every other backend is compared with it")
    case = eq.make_case(variant_spec(tmp_path, variant))
    judge = eq.Judge(backend.name, case.spec.dtype)
    key = (variant, judge.trajectory_precision)
    if key not in _TORCH_TRAJECTORIES:
        _TORCH_TRAJECTORIES[key] = eq.reference_trajectory(load_backend("torch"), case, judge.trajectory_precision)
    ref = _TORCH_TRAJECTORIES[key]
    assert ref.steps == TRAJECTORY_STEPS or judge.trajectory_precision == "float32"
    assert state_of(ref.weights) or all(step.noise.draws for step in eq.trajectory_steps(case))
    got = eq.trajectory(backend, case, ref.steps)
    assert not eq.failures(eq.compare_trajectories(judge, got, ref, eq.term_names(case)))


def test_a_wrong_gradient_misses_the_finite_differences_at_both_steps(tmp_path: Path) -> None:
    """The retry at a smaller step (FD_RETRY_DIVISOR) forgives a kink the first step crossed,
    never a gradient 1% off."""
    case = eq.make_case(variant_spec(tmp_path, "batch_norm_flat_unbiased"))
    name, index = "encoder.1.kernel", 406 * 5  # the centre pixel's first unit
    right = eq.fd_entry(case, name, index)
    assert eq.fd_error(case, name, index, right, abs(right)) == 0.0
    assert eq.fd_error(case, name, index, 1.01 * right, abs(right)) > 10 * FD_TOL
    assert (name, index, FD_STEP / FD_RETRY_DIVISOR) in case.finite_differences


def test_a_trajectory_is_held_to_the_reference_rounding_spread_and_no_further(tmp_path: Path) -> None:
    """A bias straight before batch_norm drifts by rounding (Adam's lr * g / epsilon), so the
    reference's run from a nudged start spreads there, and only there; a real difference in a
    weight the loss depends on still fails."""
    case = batch_norm_case(tmp_path, "batch_norm_image_biased")
    name = cheap_backend()
    ref = eq.reference_trajectory(load_backend(name), case)
    assert ref.rounding_spread["trajectory:encoder.0.bias"] > 1e-8
    assert ref.rounding_spread["trajectory:loss:total"] < 1e-12
    assert ref.rounding_spread["trajectory:encoder.0.kernel"] < 1e-12
    wrong = dict(ref.weights, **{"encoder.1.gamma": ref.weights["encoder.1.gamma"] * 1.001})
    judge = eq.Judge(name, case.spec.dtype)
    failed = eq.failures(eq.compare_trajectories(judge, dataclasses.replace(ref, weights=wrong), ref, ("total",)))
    assert [f.split(":")[1] for f in failed] == ["encoder.1.gamma"]


# ---------------------------------------------------------------- residual's conventions


def variant_plan(variant: str) -> ModelPlan:
    """The plan of a variant's spec (parsed from text, no file)."""
    data = yaml.safe_load(variant_text(variant))
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


def test_a_block_that_reads_the_data_counts_its_later_layers_input_gradients(tmp_path: Path) -> None:
    """Only the block's first conv reads the data: the second one's input gradient is work."""
    block = (
        "{type: residual, layers: [{type: conv, filters: 1, kernel: 3, stride: 1, padding: same}, "
        "{type: conv, filters: 1, kernel: 3, stride: 1, padding: same}]}"
    )
    plan = plan_model(spec_with_encoder(tmp_path, "residual_first", [block, "{type: flatten}"]))
    first_conv = plan.encoder[0].children[0]
    macs = sum(kind_of(layer.layer).macs(layer) for layer in plan.layers)
    assert training_step_flops(plan, 1) == 2 * (3 * macs - kind_of(first_conv.layer).macs(first_conv))


def test_memory_names_a_layer_of_the_block_to_shrink_not_its_projection(tmp_path: Path) -> None:
    """The projection's output is the block's largest here (the conv inside is at half the
    resolution), but the spec has no projection field: the conv's filters set its size."""
    block = (
        "{type: residual, projection: true, layers: [{type: conv, filters: 8, kernel: 3, stride: 2, padding: same}, "
        "{type: upsample, factor: 2, interpolation: nearest}]}"
    )
    plan = plan_model(spec_with_encoder(tmp_path, "wide_residual", [block, "{type: flatten}"]))
    assert largest_size_field(plan) == "model.encoder[0].layers[0].filters"


def test_residual_with_its_activation_before_the_add_fails_the_check(monkeypatch, tmp_path: Path) -> None:
    """torch's block computing relu(body(x)) + x instead of relu(body(x) + x) must fail the check."""
    if "torch" not in available_backends():
        pytest.skip("torch is not available")
    from aebench.backends.torch import model

    def activation_before_add(self, x, draws=model.NO_DRAWS, taps=None):
        if not isinstance(self.op, model.Residual):
            return self.act(self.op(x, draws) if getattr(self.op, "takes_draws", False) else self.op(x))
        h = x
        for module in self.op.layers:
            h = module(h, draws)
        return self.act(h) + (x if self.op.projection is None else self.op.projection(x, draws))

    case = eq.make_case(variant_spec(tmp_path, "residual_image_identity"))
    backend = load_backend("torch")
    assert not eq.failures(eq.check_loss_terms(backend, case))
    monkeypatch.setattr(model.Activated, "forward", activation_before_add)
    assert eq.failures(eq.check_loss_terms(backend, case))


# ---------------------------------------------------------------- dropout's conventions


def dropout_train(x: np.ndarray, rate: float, draw: np.ndarray) -> np.ndarray:
    """The oracle's training-mode dropout of ``x`` with the injected ``draw``."""
    layer = Dropout("dropout", rate)
    plan = LayerPlan("layer", layer, x.shape[1:], x.shape[1:], ())
    out, state = kind_of(layer).train_oracle(plan, {}, x, {"layer": draw})
    assert state == {}
    return out


ROW = np.full((1, 4), 2.0)
DRAW = np.array([[0.1, 0.3, 0.5, 0.9]])  # 0.3: a draw equal to the rate is kept


def test_dropout_keeps_the_values_drawn_at_or_above_the_rate_scaled_by_one_over_the_keep_probability() -> None:
    """Inverted dropout: x * (u >= rate) / (1 - rate). Not inverted (x * keep) gives 2, 2, 2 where
    kept; keep and drop swapped (u < rate kept) gives 2 / 0.7, 0, 0, 0."""
    np.testing.assert_allclose(dropout_train(ROW, 0.3, DRAW), [[0.0, 2 / 0.7, 2 / 0.7, 2 / 0.7]], rtol=1e-15)
    np.testing.assert_array_equal(dropout_train(ROW, 0.0, DRAW), ROW)  # rate 0 keeps everything as it is


def test_dropout_is_the_identity_in_evaluation_and_needs_its_draw_in_training() -> None:
    layer = Dropout("dropout", 0.5)
    plan = LayerPlan("encoder.0", layer, (4,), (4,), ())
    np.testing.assert_array_equal(oracle_layer(layer, ROW), ROW)
    np.testing.assert_array_equal(apply_layer(plan, {}, ROW, None, {"encoder.0": DRAW})[1], ROW)  # draws unread
    with pytest.raises(ValueError, match="encoder.0 .dropout. runs in training mode without its injected draw"):
        apply_layer(plan, {}, ROW, {})


def test_dropout_draws_come_after_the_other_noise_and_only_for_training(tmp_path: Path) -> None:
    """A spec's reparameterisation and corruption noise do not move when a dropout layer is
    added (its draws come last from the batch's stream); evaluation draws none."""
    path = tmp_path / "denoising_vae_dropout.yaml"
    path.write_text(
        f"extends: {builtin_specs_dir() / 'denoising_vae.yaml'}\n"
        "model:\n  encoder:\n    - {type: dense, units: 512, activation: relu}\n    - {type: dropout, rate: 0.2}\n"
    )
    base, with_dropout = load_spec("denoising_vae"), load_spec(path)
    before = draw_noise(base, plan_model(base), 4, stream(0, 1))
    after = draw_noise(with_dropout, plan_model(with_dropout), 4, stream(0, 1))
    evaluation = draw_noise(with_dropout, plan_model(with_dropout), 4, stream(0, 1), training=False)
    assert before.draws == {} and evaluation.draws == {}
    for noise in (after, evaluation):
        np.testing.assert_array_equal(noise.eps, before.eps)
        np.testing.assert_array_equal(noise.corruption, before.corruption)
    assert {k: v.shape for k, v in after.draws.items()} == {"encoder.1": (4, 512)}


def dropout_case(tmp_path: Path) -> eq.Case:
    return eq.make_case(variant_spec(tmp_path, "dropout"))


def test_dropout_is_off_in_evaluation(backend, tmp_path: Path) -> None:
    """loss_terms(training=False), what the test split is scored with, is the oracle's
    evaluation (no dropout) although the batch carries draws; the training-mode loss differs."""
    case = dropout_case(tmp_path)
    assert set(case.batch.noise.draws) == {"encoder.1", "encoder.4"}
    got = backend.loss_terms(eq.built(backend, case), case.batch, training=False)
    ref = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan, training=False)
    train = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan)
    assert abs(ref["total"] - train["total"]) > 1e-6 * abs(ref["total"])  # 1e4 times the 1e-10 tolerance
    assert not eq.failures(eq.compare_loss_terms(eq.Judge(backend.name, case.spec.dtype), got, ref))


def test_dropout_trainer_steps_use_each_steps_draws(backend, tmp_path: Path) -> None:
    """Three float64 trainer steps, each with its own draws, equal backend.gradients on that
    step's batch followed by the NumPy reference Adam."""
    case = dropout_case(tmp_path)
    steps = eq.trajectory_steps(case)[:3]
    model = eq.built(backend, case)
    losses = backend.trainer(model, case.train_x, None).run(steps)
    trained = backend.get_weights(model)

    probe = eq.built(backend, case)
    adam, weights, expected = NumpyAdam(case.spec.optimizer, case.weights), case.weights, []
    for step in steps:
        backend.set_weights(probe, weights)
        terms, grads = backend.gradients(probe, Batch(case.train_x[step.indices], None, step.noise))
        expected.append([terms[t] for t in loss_term_names(case.spec)])
        weights = adam.update(weights, grads)
    assert len({float(row[0]) for row in expected}) == 3
    np.testing.assert_allclose(losses, expected, rtol=1e-12)
    for name in weights:
        np.testing.assert_allclose(trained[name], weights[name], rtol=1e-9, atol=1e-12, err_msg=name)


def broken_dropout(convention: str):
    """A forward for torch's InjectedDropout on another convention than aebench's."""
    import torch
    import torch.nn.functional as F

    def own(self, draws):
        draw = draws.get(self.name)
        return None if draw is None else draw.permute(0, 3, 1, 2) if draw.dim() == 4 else draw

    def not_inverted(self, x, draws):
        return torch.where(own(self, draws) >= self.rate, x, 0.0) if self.training else x

    def keep_and_drop_swapped(self, x, draws):
        return torch.where(own(self, draws) < self.rate, x / (1 - self.rate), 0.0) if self.training else x

    def active_in_evaluation(self, x, draws):  # the draw whenever there is one, else torch's own mask
        draw = own(self, draws)
        if draw is None:
            return F.dropout(x, self.rate, training=True)
        return torch.where(draw >= self.rate, x / (1 - self.rate), 0.0)

    return {f.__name__: f for f in (not_inverted, keep_and_drop_swapped, active_in_evaluation)}[convention]


def dropout_check_failures(backend, case: eq.Case) -> set[str]:
    """The failed quantities of the training-mode loss terms, encode/decode and the
    evaluation-mode loss terms ('eval ...') against the oracle."""
    judge = eq.Judge(backend.name, case.spec.dtype)
    comparisons = eq.check_loss_terms(backend, case) + eq.check_encode_decode(backend, case)
    got = backend.loss_terms(eq.built(backend, case), case.batch, training=False)
    ref = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan, training=False)
    comparisons += [
        eq.Comparison(f"eval {c.quantity}", c.error, c.tolerance) for c in eq.compare_loss_terms(judge, got, ref)
    ]
    return {c.quantity for c in comparisons if not c.passed}


@pytest.mark.parametrize(
    "convention, caught",
    [
        ("not_inverted", {"loss:total"}),
        ("keep_and_drop_swapped", {"loss:total"}),
        ("active_in_evaluation", {"encode:code", "eval loss:total"}),
    ],
)
def test_another_dropout_convention_in_torch_fails_the_check(convention, caught, monkeypatch, tmp_path) -> None:
    if "torch" not in available_backends():
        pytest.skip("torch is not available here")
    from aebench.backends.torch import model
    from aebench.plugins.registry import load_backend

    backend, case = load_backend("torch"), dropout_case(tmp_path)
    assert dropout_check_failures(backend, case) == set()
    monkeypatch.setattr(model.InjectedDropout, "forward", broken_dropout(convention))
    assert caught <= dropout_check_failures(backend, case)


DROPOUT_BENCH_MODE = {"torch": "eager", "jax": "fast"}
"""A mode per backend that reads the draws from its device tables: torch's eager (its compiled
modes, a cold torch.compile each, take a minute) and JAX's lax.scan. The Keras runners take
their draws the same way; a process of a Keras engine costs 15-25 s here, so they are left out
(every real cell still replays its first steps on the trainer: aebench.bench.cell)."""
DROPOUT_BENCH_PROBE = textwrap.dedent("""
    import sys
    import numpy as np
    from aebench.bench.cell import bench_steps
    from aebench.bench.data import make_bench_data
    from aebench.data.datasets import load_dataset
    from aebench.plugins.bench_api import Precision
    from aebench.plugins.registry import load_backend, plugin
    from aebench.spec.load import load_spec

    name, mode, path = sys.argv[1:]
    backend, spec = load_backend(name), load_spec(path)
    data = make_bench_data(spec, load_dataset(spec), 8, 3)
    runner = plugin(name).bench().prepare(backend, spec, mode, data, Precision(), 3 if mode == "fast" else 1)
    handles = [runner.dispatch() for _ in range(3 // runner.steps_per_call)]
    runner.wait(handles[-1])
    model = backend.build(spec)
    backend.set_weights(model, data.weights)
    replay = backend.trainer(model, data.x, data.labels, data.steps_per_epoch).run(bench_steps(data, 3))[:, 0]
    print(sorted(data.draws), float(np.max(np.abs(runner.losses(handles) - replay) / np.abs(replay))))
""")


@pytest.mark.parametrize("name", sorted(DROPOUT_BENCH_MODE))
def test_dropout_bench_steps_replay_on_the_trainer(name: str, tmp_path: Path) -> None:
    """A bench runner's steps read each step's draws from the device tables as the trainer gets
    them from its Steps: three timed steps' losses equal the trainer's, in a process of the
    backend's own as a cell runs."""
    if name not in available_backends():
        pytest.skip(f"{name} is not available here")
    path = tmp_path / "dropout.yaml"
    path.write_text(variant_text("dropout"))
    mode = DROPOUT_BENCH_MODE[name]
    out = subprocess.run(
        [sys.executable, "-c", DROPOUT_BENCH_PROBE, name, mode, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    names, error = out.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    assert names == "['encoder.1', 'encoder.4']"
    assert float(error) <= 1e-12, (name, mode, error)
