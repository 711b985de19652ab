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
from cases import oracle_layer

from aebench.check import equivalence as eq
from aebench.layers import LAYER_KINDS
from aebench.layers.avg_pool import AvgPool
from aebench.layers.upsample import Upsample
from aebench.spec.load import load_spec

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
    "upsample_bilinear": [
        "{type: conv, filters: 2, kernel: 3, stride: 4, padding: same}",
        "{type: upsample, factor: 3, interpolation: bilinear}",
        "{type: flatten}",
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
    import yaml

    return [type("L", (), yaml.safe_load(text)) for text in VARIANTS[variant]]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_layer_matches_the_oracle_on_every_backend(backend, variant: str, tmp_path: Path) -> None:
    case = eq.make_case(variant_spec(tmp_path, variant))
    comparisons = eq.check_loss_terms(backend, case) + eq.check_encode_decode(backend, case)
    comparisons += eq.check_gradients_fd(backend, case)
    assert not eq.failures(comparisons)


def test_average_pooling_divisors_differ_at_the_borders_only() -> None:
    x = np.random.default_rng(0).random((1, 6, 6, 1))
    real, whole = (oracle_layer(AvgPool("avg_pool", 3, "same", 2, flag), x) for flag in (False, True))
    assert np.abs(real - whole)[0, :2, :2].max() < 1e-15  # interior windows: 9 real cells
    assert np.abs(real - whole)[0, 2, :, 0].min() > 1e-3  # the last row of windows reaches the padding


def test_bilinear_upsampling_uses_half_pixel_centres_not_aligned_corners() -> None:
    x = np.array([0.0, 1.0, 4.0]).reshape(1, 1, 3, 1).repeat(2, axis=1)
    out = oracle_layer(Upsample("upsample", 2, "bilinear"), x)[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.75, 3.25, 4.0])  # align_corners=True: 0, .4, .8, 1.6, 2.8, 4
