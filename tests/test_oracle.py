"""The NumPy oracle against values computed by hand on tiny shapes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from cases import conv2d, conv2d_transpose

from aebench.check import oracle
from aebench.data.noise import corrupt
from aebench.layers.activations import Activation, sigmoid
from aebench.layers.conv import same_pads
from aebench.losses._minibatch_weighted import LOG_2PI, decomposition
from aebench.losses.contractive import Contractive, code_jacobian, contractive_loss
from aebench.losses.kl import KL, kl_loss
from aebench.losses.mmd import MMD, kernel_matrix, mmd_loss
from aebench.losses.reconstruction import Reconstruction, bce_with_logits, reconstruction_loss
from aebench.losses.sparsity import Sparsity, sparsity_loss
from aebench.spec.types import Gaussian, Masking, SaltAndPepper


def test_kl_of_a_known_gaussian() -> None:
    # N([1, 0], diag[1, 4]) against N(0, I):
    # dim 1: 0.5 * (1 + 1 - 1 - 0) = 0.5; dim 2: 0.5 * (4 + 0 - 1 - ln 4) = 0.8068528194400547
    mean = np.array([[1.0, 0.0]])
    log_var = np.array([[0.0, math.log(4.0)]])
    assert kl_loss(KL(1.0, "sum", "mean"), mean, log_var) == pytest.approx(1.3068528194400547, rel=1e-15)
    assert kl_loss(KL(1.0, "mean", "mean"), mean, log_var) == pytest.approx(0.6534264097200273, rel=1e-15)


def test_kl_is_zero_at_the_prior_and_batch_reductions_differ() -> None:
    zeros = np.zeros((3, 5))
    assert kl_loss(KL(1.0, "sum", "mean"), zeros, zeros) == 0.0
    mean = np.array([[2.0], [0.0]])  # per example 2.0 and 0.0
    assert kl_loss(KL(1.0, "sum", "mean"), mean, np.zeros_like(mean)) == 1.0
    assert kl_loss(KL(1.0, "sum", "sum"), mean, np.zeros_like(mean)) == 2.0


def test_sparsity_kl_by_hand() -> None:
    # rho = 0.1; batch means of the two units: 0.2 and 0.05.
    # unit 1: 0.1 ln(0.1/0.2) + 0.9 ln(0.9/0.8)  = 0.036690014034750
    # unit 2: 0.1 ln(0.1/0.05) + 0.9 ln(0.9/0.95) = 0.020654218912746
    code = np.array([[0.3, 0.0], [0.1, 0.1]])
    unit1 = 0.1 * math.log(0.5) + 0.9 * math.log(0.9 / 0.8)
    unit2 = 0.1 * math.log(2.0) + 0.9 * math.log(0.9 / 0.95)
    assert unit1 == pytest.approx(0.036690014034750, abs=1e-14)
    assert unit2 == pytest.approx(0.020654218912746, abs=1e-14)
    assert sparsity_loss(Sparsity(0.1, 1.0, "sum"), code) == pytest.approx(unit1 + unit2, rel=1e-14)
    assert sparsity_loss(Sparsity(0.1, 1.0, "mean"), code) == pytest.approx((unit1 + unit2) / 2, rel=1e-14)


def test_sparsity_kl_is_zero_when_every_unit_averages_rho() -> None:
    assert sparsity_loss(Sparsity(0.05, 1.0, "sum"), np.full((4, 3), 0.05)) == pytest.approx(0.0, abs=1e-16)


def _sigmoid_code_plan(n_in: int, n_code: int):
    from aebench.layers.base import LayerPlan, Param
    from aebench.layers.dense import Dense
    from aebench.spec.shapes import ModelPlan

    head = LayerPlan(
        "code",
        Dense("dense", n_code, Activation("sigmoid")),
        (n_in,),
        (n_code,),
        (
            Param("code.kernel", (n_in, n_code), "kernel", n_in, n_code),
            Param("code.bias", (n_code,), "bias", n_in, n_code),
        ),
    )
    return ModelPlan((n_in,), 0, (), (head,), ())


def _finite_difference_jacobian(fn, x: np.ndarray, step: float = 1e-6) -> np.ndarray:
    jac = np.zeros((x.shape[0], x.shape[1], fn(x).shape[1]))
    for i in range(x.shape[1]):
        up, down = x.copy(), x.copy()
        up[:, i] += step
        down[:, i] -= step
        jac[:, i, :] = (fn(up) - fn(down)) / (2 * step)
    return jac


def test_contractive_closed_form_matches_a_finite_difference_jacobian() -> None:
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.random((3, 5)), rng.normal(size=(5, 4)), rng.normal(size=4)
    weights = {"code.kernel": kernel, "code.bias": bias}
    plan = _sigmoid_code_plan(5, 4)
    h = sigmoid(x @ kernel + bias)
    # Closed form for a sigmoid dense code: sum_j (h_j (1 - h_j))^2 sum_i W_ij^2, per example.
    closed = ((h * (1 - h)) ** 2 * (kernel**2).sum(axis=0)).sum(axis=1).mean()
    fd = _finite_difference_jacobian(lambda v: sigmoid(v @ kernel + bias), x)
    jac = code_jacobian(plan, weights, x)
    np.testing.assert_allclose(jac, fd, rtol=1e-8, atol=1e-10)
    assert contractive_loss(Contractive(1.0, "mean"), jac) == pytest.approx(closed, rel=1e-13)
    assert contractive_loss(Contractive(1.0, "mean"), fd) == pytest.approx(closed, rel=1e-7)


def test_same_padding_at_stride_2_puts_the_extra_row_and_column_after() -> None:
    assert same_pads(28, 3, 2) == (0, 1)
    assert same_pads(4, 3, 2) == (0, 1)
    assert same_pads(5, 3, 1) == (1, 1)
    x = np.arange(16.0).reshape(1, 4, 4, 1)  # rows [0 1 2 3] [4 5 6 7] [8 9 10 11] [12 13 14 15]
    out = conv2d(x, np.ones((3, 3, 1, 1)), np.zeros(1), stride=2, padding="same")
    # windows start at rows/cols 0 and 2; the window at 2 covers 2, 3 and one padded zero:
    # [0,0]: 0+1+2+4+5+6+8+9+10 = 45    [0,1]: 2+3+6+7+10+11 = 39
    # [1,0]: 8+9+10+12+13+14 = 66       [1,1]: 10+11+14+15 = 50
    np.testing.assert_array_equal(out[0, :, :, 0], [[45.0, 39.0], [66.0, 50.0]])
    # torch's padding=1 pads both sides: its [0,0] window would be 0+1+4+5 = 10.


def test_valid_convolution_and_channels_by_hand() -> None:
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    kernel = np.zeros((2, 2, 1, 2))
    kernel[0, 0, 0, 0] = 1.0  # channel 0 picks the top-left of each window
    kernel[1, 1, 0, 1] = 1.0  # channel 1 picks the bottom-right
    out = conv2d(x, kernel, np.array([0.0, 100.0]), stride=1, padding="valid")
    np.testing.assert_array_equal(out[0, :, :, 0], [[0, 1], [3, 4]])
    np.testing.assert_array_equal(out[0, :, :, 1], [[104, 105], [107, 108]])


def test_transposed_convolution_same_at_stride_2_by_hand() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    out = conv2d_transpose(x, np.ones((3, 3, 1, 1)), np.zeros(1), stride=2, padding="same")
    # Each input value is spread over a 3x3 block at (2i, 2j) of a 5x5 canvas, which is cut to 4x4 at (0, 0).
    np.testing.assert_array_equal(out[0, :, :, 0], [[1, 1, 3, 2], [1, 1, 3, 2], [4, 4, 10, 6], [3, 3, 7, 4]])


def test_transposed_convolution_does_not_flip_the_kernel() -> None:
    x = np.ones((1, 1, 1, 1))
    kernel = np.arange(9.0).reshape(3, 3, 1, 1)
    out = conv2d_transpose(x, kernel, np.zeros(1), stride=1, padding="valid")
    np.testing.assert_array_equal(out[0, :, :, 0], np.arange(9.0).reshape(3, 3))


def test_transposed_convolution_kernel_is_out_then_in() -> None:
    x = np.array([[[[1.0, 10.0]]]])  # one pixel, two input channels
    kernel = np.zeros((1, 1, 3, 2))  # (kh, kw, out=3, in=2)
    kernel[0, 0] = [[1, 0], [0, 1], [1, 1]]
    out = conv2d_transpose(x, kernel, np.zeros(3), stride=1, padding="valid")
    np.testing.assert_array_equal(out[0, 0, 0], [1.0, 10.0, 11.0])


def test_bce_from_logits_by_hand() -> None:
    assert bce_with_logits(np.array(0.0), np.array(1.0)) == pytest.approx(math.log(2), rel=1e-15)
    # logit 30, target 0: -log(1 - sigmoid(30)) = 30 + log(1 + e^-30), computed without overflow
    assert bce_with_logits(np.array(30.0), np.array(0.0)) == pytest.approx(30 + math.exp(-30), rel=1e-15)
    assert bce_with_logits(np.array(-800.0), np.array(1.0)) == pytest.approx(800.0, rel=1e-15)


def test_reconstruction_reductions() -> None:
    x = np.zeros((2, 2))
    logits = np.array([[1.0, 3.0], [5.0, 7.0]])  # linear output: squared errors 1, 9, 25, 49
    mse = lambda f, b: reconstruction_loss(Reconstruction("mse", 1.0, f, b), "linear", logits, x)  # noqa: E731
    assert mse("sum", "mean") == 42.0
    assert mse("mean", "mean") == 21.0
    assert mse("sum", "sum") == 84.0
    assert mse("mean", "sum") == 42.0


def test_corruptions_from_injected_noise() -> None:
    x = np.array([[0.2, 0.5, 0.9, 0.0]])
    normal = np.array([[1.0, -1.0, 1.0, -1.0]])
    np.testing.assert_allclose(corrupt(Gaussian("gaussian", 0.4, (0.0, 1.0)), x, normal), [[0.6, 0.1, 1.0, 0.0]])
    np.testing.assert_allclose(corrupt(Gaussian("gaussian", 0.4, None), x, normal), [[0.6, 0.1, 1.3, -0.4]])
    uniform = np.array([[0.01, 0.5, 0.96, 0.2]])
    np.testing.assert_array_equal(corrupt(Masking("masking", 0.3), x, uniform), [[0.0, 0.5, 0.9, 0.0]])
    np.testing.assert_array_equal(corrupt(SaltAndPepper("salt_and_pepper", 0.1), x, uniform), [[0.0, 0.5, 1.0, 0.0]])


def test_flatten_walks_height_width_channels() -> None:
    from aebench.layers.base import LayerPlan
    from aebench.layers.flatten import Flatten

    x = np.arange(12.0).reshape(1, 2, 2, 3)
    _, flat = oracle.apply_layer(LayerPlan("encoder.0", Flatten("flatten"), (2, 2, 3), (12,), ()), {}, x)
    np.testing.assert_array_equal(flat[0], np.arange(12.0))
    # channel-first (torch NCHW) order would start 0, 3, 6, 9


def test_minibatch_weighted_terms_add_up_to_the_sampled_kl_and_n_shifts_only_constants() -> None:
    """MI + TC + dimension-wise KL = mean_i [log q(z_i|x_i) - log p(z_i)] (the decomposition is
    exact for the estimates); N moves the three by log(N) x (1, D - 1, -D), so never a gradient."""
    rng = np.random.default_rng(3)
    mean, log_var = rng.standard_normal((16, 5)), 0.3 * rng.standard_normal((16, 5))
    z = mean + np.exp(0.5 * log_var) * rng.standard_normal((16, 5))
    parts = decomposition(z, mean, log_var, log_nm=math.log(1000 * 16))
    log_q = (-0.5 * (LOG_2PI + log_var + (z - mean) ** 2 * np.exp(-log_var))).sum(axis=1)
    log_p = (-0.5 * (LOG_2PI + z**2)).sum(axis=1)
    np.testing.assert_allclose(sum(parts.values()), log_q - log_p, rtol=1e-12)
    bigger = decomposition(z, mean, log_var, log_nm=math.log(8000 * 16))
    shift = math.log(8.0)
    for name, factor in (("mutual_information", 1), ("total_correlation", 4), ("dimension_kl", -5)):
        np.testing.assert_allclose(bigger[name] - parts[name], factor * shift, rtol=1e-12)


def test_the_expanded_squared_distance_cancels_and_the_direct_one_does_not() -> None:
    """Codes 1e-3 apart around 30 (a code far from the prior): ||a||^2 - 2 a.b + ||b||^2 in float32
    loses the distance entirely (it is 2e-6 against squared norms of 9,000), the direct sum keeps it."""
    rng = np.random.default_rng(0)
    a = (30.0 + rng.standard_normal((8, 10))).astype(np.float32)
    b = (a + np.float32(1e-3) * rng.standard_normal((8, 10)).astype(np.float32)).astype(np.float32)
    exact = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).sum(axis=1)
    direct = ((a - b) ** 2).sum(axis=1)
    expanded = (a * a).sum(axis=1) - 2 * (a * b).sum(axis=1) + (b * b).sum(axis=1)
    assert np.abs(direct - exact).max() < 1e-4 * exact.max()
    assert np.abs(expanded - exact).max() > 10 * exact.max()


def test_mmd_is_the_unbiased_estimate_and_pythae_differs_by_a_constant() -> None:
    rng = np.random.default_rng(1)
    z, prior = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    cfg = MMD(weight=1.0, kernel="imq", bandwidth=1.0, scales=(0.5, 1.0, 2.0))

    def k(a, b):
        return sum(c / (c + ((a - b) ** 2).sum()) for c in (2 * 3 * s for s in cfg.scales))

    n = len(z)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    by_hand = (
        sum(k(z[i], z[j]) + k(prior[i], prior[j]) for i, j in pairs) / (n * (n - 1))
        - 2 * sum(k(z[i], prior[j]) for i in range(n) for j in range(n)) / n**2
    )
    assert mmd_loss(cfg, z, prior) == pytest.approx(by_hand, rel=1e-12)
    kz, kp, kc = kernel_matrix(cfg, z, z), kernel_matrix(cfg, prior, prior), kernel_matrix(cfg, z, prior)
    pythae = ((kz - np.diag(kz)).sum() / (n - 1) + (kp - np.diag(kp)).sum() / (n - 1) - 2 * kc.sum() / n) / n
    assert pythae - mmd_loss(cfg, z, prior) == pytest.approx(-2 * len(cfg.scales), rel=1e-12)


def test_term_draws_follow_every_other_draw_and_leave_other_specs_alone() -> None:
    from aebench.data.noise import draw_noise, stream
    from aebench.losses.base import draw_key
    from aebench.spec.load import load_spec
    from aebench.spec.shapes import plan_model

    swae, ae = load_spec("swae"), load_spec("ae")
    for spec in (swae, ae):
        plan = plan_model(spec)
        with_terms = draw_noise(spec, plan, 5, stream(0, 1))
        without = draw_noise(spec, plan, 5, stream(0, 1), terms=False)
        assert {k: v.tolist() for k, v in without.draws.items()} == {
            k: v.tolist() for k, v in with_terms.draws.items() if not k.startswith("loss.")
        }
    plan = plan_model(swae)
    noise = draw_noise(swae, plan, 5, stream(0, 1), training=False)
    directions = noise.draws[draw_key("sliced_wasserstein", "projections")]
    assert noise.draws[draw_key("sliced_wasserstein", "prior")].shape == (5, plan.latent_size)
    np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, rtol=1e-15)
    assert not draw_noise(ae, plan_model(ae), 5, stream(0, 1)).draws


CATEGORICAL_SPEC = """
description: "a tiny categorical VAE on synthetic data: 2 variables of 3 categories"
model:
  family: categorical
  encoder: []
  latent: {size: 6, categories: 3, hard: false, temperature: {initial: 2.0, minimum: 0.5, rate: 0.1, interval: 2}}
  decoder:
    - {type: dense, units: 4}
  output_activation: sigmoid
loss:
  reconstruction: {kind: bce, weight: 1.0, features: sum, batch: mean}
  categorical_kl: {weight: 1.0, features: sum, batch: mean}
data: {name: synthetic, shape: [4], n_train: 24, n_test: 8, seed: 0}
init: {kernel: glorot_uniform, bias: zeros}
optimizer: {name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}
train: {batch_size: 4, epochs: 1, seed: 0}
dtype: float64
"""


def categorical_spec(tmp_path, text: str = CATEGORICAL_SPEC):
    from aebench.spec.load import load_spec

    path = tmp_path / "categorical.yaml"
    path.write_text(text)
    return load_spec(path)


def test_categorical_kl_is_the_closed_form_and_log_softmax_keeps_it_finite() -> None:
    """KL(q || Uniform(K)) = sum_k q_k log(q_k K) by hand; a logit 800 (float64) or 120 (float32)
    below the others underflows softmax to 0, where log(softmax) is -inf and q log q a NaN."""
    from aebench.categorical import kl_to_uniform, log_softmax
    from aebench.losses.categorical_kl import CategoricalKL, categorical_kl_loss

    logits = np.array([[0.0, math.log(2.0), math.log(5.0), 0.0, 0.0, 0.0]])  # q = (1, 2, 5) / 8 and uniform
    q = np.array([1.0, 2.0, 5.0]) / 8.0
    by_hand = float((q * np.log(q * 3)).sum())
    np.testing.assert_allclose(kl_to_uniform(logits, 3), [[by_hand, 0.0]], rtol=1e-14, atol=1e-16)
    assert categorical_kl_loss(CategoricalKL(1.0, "mean", "mean"), logits, 3) == pytest.approx(by_hand / 2, rel=1e-14)
    for dtype, gap in ((np.float64, 800.0), (np.float32, 120.0)):
        far = np.array([[0.0, -gap, 1.0]], dtype)
        with np.errstate(divide="ignore", invalid="ignore"):
            shifted = np.exp(far - far.max())
            naive = np.log(shifted / shifted.sum())
            assert np.isneginf(naive[0, 1]) and np.isnan((np.exp(naive) * naive).sum())  # the trap
        assert np.isfinite(log_softmax(far)).all()
        assert np.isfinite(kl_to_uniform(far.astype(np.float64), 3)).all()


def test_the_temperature_schedule_is_the_papers_updated_every_interval() -> None:
    """tau_t = max(minimum, initial exp(-r interval floor(t / interval))): Jang et al.'s
    max(0.5, exp(-r t)) held for N steps; evaluation runs at the floor."""
    from aebench.spec.types import Temperature

    paper = Temperature(initial=1.0, minimum=0.5, rate=1e-5, interval=1000)
    assert paper.at(0) == paper.at(999) == 1.0
    assert paper.at(1000) == paper.at(1999) == pytest.approx(math.exp(-0.01), rel=1e-15)
    assert paper.at(10_000) == pytest.approx(math.exp(-0.1), rel=1e-15)
    assert paper.at(69_999) == pytest.approx(math.exp(-0.69), rel=1e-15) and paper.at(70_000) == 0.5
    assert paper.evaluation == 0.5


def test_every_driver_injects_the_temperature_of_its_step(tmp_path) -> None:
    """Training's epochs, the check's trajectory and the bench's pool give step t the schedule's
    tau_t (here it moves every 2 steps), evaluation batches the floor: the same number wherever
    step t is computed."""
    from aebench.bench.data import make_bench_data
    from aebench.categorical import TEMPERATURE_KEY
    from aebench.check.equivalence import make_case, trajectory_steps
    from aebench.data.datasets import load_dataset
    from aebench.data.noise import TEST_STREAM, draw_noise, stream
    from aebench.spec.shapes import plan_model
    from aebench.train.loop import epoch_steps_of

    spec = categorical_spec(tmp_path)
    plan, schedule = plan_model(spec), spec.model.latent.temperature
    order = np.arange(12).reshape(3, 4)
    epoch_two = [float(s.noise.draws[TEMPERATURE_KEY]) for s in epoch_steps_of(spec, plan, 2, order)]
    assert epoch_two == [schedule.at(t) for t in (3, 4, 5)]
    assert epoch_two == pytest.approx([2 * math.exp(-0.2), 2 * math.exp(-0.4), 2 * math.exp(-0.4)], rel=1e-15)
    trajectory = [float(s.noise.draws[TEMPERATURE_KEY]) for s in trajectory_steps(make_case(spec))]
    assert trajectory == [schedule.at(t) for t in range(len(trajectory))]
    bench = make_bench_data(spec, load_dataset(spec), 4, 10)
    assert bench.draws[TEMPERATURE_KEY].tolist() == [schedule.at(t) for t in range(6)]  # 24 examples: 6 batches
    evaluation = draw_noise(spec, plan, 4, stream(0, TEST_STREAM), training=False)
    assert float(evaluation.draws[TEMPERATURE_KEY]) == 0.5
    assert evaluation.eps.shape == (4, 6) and np.isfinite(evaluation.eps).all()


def test_gumbel_noise_is_gumbel_and_its_argmax_samples_the_categorical() -> None:
    """The injected g is Gumbel(0, 1) (mean: Euler's gamma, variance pi^2 / 6), and
    argmax(logits + g) draws category k with probability softmax(logits)_k (the quality
    step's one-hot posterior samples)."""
    from aebench.categorical import gumbel_noise, posterior_codes, softmax

    g = gumbel_noise(np.random.default_rng(0), (200_000,))
    assert np.isfinite(g).all()
    assert g.mean() == pytest.approx(0.5772156649, abs=0.01) and g.var() == pytest.approx(math.pi**2 / 6, rel=0.02)
    logits = np.array([[0.0, 1.0, -1.0, 2.0, 2.0, 2.0]])
    codes = posterior_codes(np.random.default_rng(1), logits, 40_000, 3)
    assert set(np.unique(codes.reshape(-1, 2, 3).sum(axis=2))) == {1.0}  # one category per variable
    np.testing.assert_allclose(codes[0].mean(axis=0), softmax(logits.reshape(2, 3)).ravel(), atol=0.01)


def test_the_relaxed_sample_is_soft_or_one_hot_and_its_replayed_tape_is_straight_through() -> None:
    """Soft: each variable's y sums to 1 and tends to argmax(logits + g) as tau falls; hard: the
    first maximum's one-hot; on a tape that replays the held one_hot(y0) - y0, y + one_hot(y0)
    - y0, whose derivative along the logits is the soft sample's (the straight-through gradient)."""
    from aebench.categorical import relaxed_sample
    from aebench.layers import Tape

    rng = np.random.default_rng(2)
    logits, g = rng.standard_normal((5, 12)), rng.gumbel(size=(5, 12))
    soft = relaxed_sample(logits, g, 0.7, 4, hard=False)
    np.testing.assert_allclose(soft.reshape(5, 3, 4).sum(axis=2), 1.0, rtol=1e-14)
    cold = relaxed_sample(logits, g, 1e-3, 4, hard=False)
    tape = Tape()
    hard = relaxed_sample(logits, g, 0.7, 4, hard=True, tape=tape)
    winners = np.eye(4)[np.argmax((logits + g).reshape(5, 3, 4), axis=2)].reshape(5, 12)
    np.testing.assert_allclose(cold, winners, atol=1e-12)
    np.testing.assert_allclose(hard, winners, atol=1e-15)
    step = np.zeros_like(logits)
    step[0, 1] = 1e-6
    moved = relaxed_sample(logits + step, g, 0.7, 4, hard=True, tape=tape.replay())
    slope = (moved - hard) / 1e-6
    soft_slope = (relaxed_sample(logits + step, g, 0.7, 4, hard=False) - soft) / 1e-6
    np.testing.assert_allclose(slope, soft_slope, rtol=1e-6, atol=1e-9)
    assert np.abs(slope).max() > 0.1  # without the replayed tape the one-hot has no slope


def test_the_discrete_log_density_ratio_is_prior_over_posterior() -> None:
    from aebench.categorical import log_density_ratio, log_softmax

    logits = np.array([[0.0, 1.0, 3.0, -1.0]])  # 2 variables of 2 categories
    codes = np.array([[[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]])
    log_q = log_softmax(logits.reshape(2, 2))
    expected = [-2 * math.log(2) - log_q[0, 0] - log_q[1, 1], -2 * math.log(2) - log_q[0, 1] - log_q[1, 0]]
    np.testing.assert_allclose(log_density_ratio(logits, codes, 2), [expected], rtol=1e-14)


def with_samples(spec, samples: int):
    """``spec`` with model.latent.samples set (the rules are not rerun: the oracle's arithmetic is what is tested)."""
    import dataclasses

    latent = dataclasses.replace(spec.model.latent, samples=samples)
    return spec.replace(model=dataclasses.replace(spec.model, latent=latent))


def test_k_samples_are_example_major_and_repeat_the_labels_and_targets_alike() -> None:
    """A pass with k = 3 samples is the one-sample pass of each example repeated 3 times in a row:
    z, the labels joined to z (cvae) and the reconstruction target follow the example (rows i k ..
    i k + k - 1), and ``batch: sum`` sums over examples the mean of their k rows."""
    import dataclasses

    from aebench.losses.base import OracleInputs
    from aebench.plugins.backend_api import Batch, Noise
    from aebench.plugins.canonical import init_weights
    from aebench.spec.load import load_spec
    from aebench.spec.shapes import plan_model

    one = load_spec("cvae")
    one = one.replace(loss=dataclasses.replace(one.loss, reconstruction=Reconstruction("bce", 1.0, "sum", "sum")))
    three = with_samples(one, 3)
    plan = plan_model(one)
    rng = np.random.default_rng(4)
    weights = {k: v + 0.1 * rng.standard_normal(v.shape) for k, v in init_weights(plan, "glorot_uniform", 0).items()}
    x, labels = rng.random((4, 784)), np.eye(10)[[3, 1, 4, 1]]
    eps = rng.standard_normal((4, 3, plan.latent_size))
    got = oracle.forward(three, weights, Batch(x, labels, Noise(eps)), plan)
    repeated = Batch(np.repeat(x, 3, axis=0), np.repeat(labels, 3, axis=0), Noise(eps.reshape(12, -1)))
    want = oracle.forward(one, weights, repeated, plan)
    np.testing.assert_allclose(got.z, want.z, rtol=1e-13)
    np.testing.assert_allclose(got.logits, want.logits, rtol=1e-12, atol=1e-12)
    assert got.mean.shape == (4, plan.latent_size) and got.samples == 3
    inputs = OracleInputs(three, plan, weights, Batch(x, labels, Noise(eps)), got)
    np.testing.assert_array_equal(inputs.target, repeated.x)
    ones = oracle.loss_terms(one, weights, repeated, plan)
    threes = oracle.loss_terms(three, weights, Batch(x, labels, Noise(eps)), plan)
    assert threes["reconstruction"] == pytest.approx(ones["reconstruction"] / 3, rel=1e-12)  # 4 examples, not 12
    sample_major = np.ascontiguousarray(eps.transpose(1, 0, 2)).reshape(12, -1)  # the flattening trap
    swapped = oracle.forward(one, weights, Batch(repeated.x, repeated.labels, Noise(sample_major)), plan)
    assert np.abs(swapped.z - want.z).max() > 0.1


def linear_gaussian(seed: int = 5):
    """p(z) = N(0, I_2), p(x|z) = N(W z + b, s2 I_3): log p(x) = log N(x; b, W W^T + s2 I) exactly."""
    rng = np.random.default_rng(seed)
    w, b, s2 = rng.standard_normal((3, 2)), rng.standard_normal(3), 0.3
    x = rng.standard_normal((2, 3)) * 2.0
    cov = w @ w.T + s2 * np.eye(3)
    diff = x - b
    log_px = -0.5 * (3 * LOG_2PI + np.linalg.slogdet(cov)[1] + np.einsum("nd,de,ne->n", diff, np.linalg.inv(cov), diff))
    precision = np.eye(2) + w.T @ w / s2
    true_mean = np.linalg.solve(precision, w.T @ diff.T / s2).T
    return w, b, s2, x, log_px, true_mean, np.linalg.inv(precision)


def test_iwae_with_one_sample_is_the_reconstruction_plus_the_sampled_kl() -> None:
    from aebench.losses.iwae import IWAE, iwae_loss

    rng = np.random.default_rng(6)
    mean, log_var, eps = rng.standard_normal((6, 3)), 0.5 * rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    z = mean + np.exp(0.5 * log_var) * eps
    logits, x = 3 * rng.standard_normal((6, 5)), rng.random((6, 5))
    got = iwae_loss(IWAE(1.0, "bernoulli"), "sigmoid", logits, x, z, mean, log_var)
    recon = reconstruction_loss(Reconstruction("bce", 1.0, "sum", "mean"), "sigmoid", logits, x)
    log_q = (-0.5 * (LOG_2PI + log_var + eps**2)).sum(axis=1)
    log_p = (-0.5 * (LOG_2PI + z**2)).sum(axis=1)
    assert got == pytest.approx(recon + (log_q - log_p).mean(), rel=1e-12)


def test_the_iwae_bound_rises_with_k_toward_log_p_x() -> None:
    """On a linear Gaussian model with a posterior that is off (mean shifted, variance too wide),
    the bound averaged over 4,000 draws rises with k and stays below log p(x) (Burda et al.,
    theorem 1); the gaussian likelihood's normalising constant is in it."""
    from aebench.losses.iwae import IWAE, iwae_loss

    w, b, s2, x, log_px, true_mean, true_cov = linear_gaussian()
    mean = true_mean[:1] + 0.5
    log_var = np.log(np.diag(true_cov))[None] + 1.0
    rng, n = np.random.default_rng(7), 4000
    bounds = []
    for k in (1, 5, 50):
        z = (mean + np.exp(0.5 * log_var) * rng.standard_normal((n, k, 2))).reshape(-1, 2)
        target = np.broadcast_to(x[:1], (n * k, 3))
        means, log_vars = np.repeat(mean, n, axis=0), np.repeat(log_var, n, axis=0)
        bounds.append(-iwae_loss(IWAE(1.0, "gaussian", s2), "linear", z @ w.T + b, target, z, means, log_vars))
    assert bounds[0] + 0.1 < bounds[1] < bounds[2] < log_px[0]
    assert log_px[0] - bounds[2] < 0.2 * (log_px[0] - bounds[0])


def test_iwae_quality_estimates_log_p_x_with_5000_samples() -> None:
    from aebench.losses.base import QualityInputs
    from aebench.losses.iwae import IWAE, quality

    w, b, s2, x, log_px, true_mean, true_cov = linear_gaussian()
    encoded = {"mean": true_mean + 0.3, "log_var": np.log(np.diag(true_cov))[None].repeat(2, axis=0) + 0.5}
    inputs = QualityInputs(None, None, encoded, np.random.default_rng(8), x, lambda z: z.reshape(-1, 2) @ w.T + b)
    nll = quality(IWAE(1.0, "gaussian", s2), inputs)["test_nll_k5000"]
    assert nll == pytest.approx(-log_px.mean(), abs=0.01)


def test_a_log_mean_exp_of_the_weights_underflows_in_float32_and_logsumexp_does_not() -> None:
    """MNIST's log weights are about -550 nats (the check batch of specs/iwae.yaml: -547 to -574):
    exp underflows to 0 in float32 (below -103) and the bound becomes -inf."""
    from aebench.losses.iwae import bound

    log_w = np.array([[-559.3, -555.6, -562.8, -556.7, -564.9]])
    with np.errstate(divide="ignore"):
        assert np.log(np.exp(log_w.astype(np.float32)).mean(axis=1))[0] == -np.inf
    shifted = log_w - log_w.max()  # what logsumexp does: the largest weight is exp(0) = 1
    assert bound(log_w)[0] == pytest.approx(-555.6 + np.log(np.exp(shifted).sum()) - np.log(5), rel=1e-15)
    by_hand = np.log((1 + np.exp(-1.1) + np.exp(-3.7) + np.exp(-7.2) + np.exp(-9.3)) / 5)
    assert bound(log_w)[0] == pytest.approx(-555.6 + by_hand, rel=1e-12)


# ---------------------------------------------------------------- VQ-VAE (vector_quantizer, codebook, commitment)

VQ_SPEC = """
model:
  family: ae
  encoder: [{{type: dense, units: 6, activation: tanh}}]
  latent: {{size: 4}}
  decoder:
    - {{type: reshape, shape: [2, 2]}}
    - {{type: vector_quantizer, codes: 3, {update}}}
    - {{type: flatten}}
    - {{type: dense, units: 784}}
  output_activation: sigmoid
loss:
  reconstruction: {{kind: mse, weight: 1.0, features: mean, batch: mean}}
  {terms}
data: {{name: mnist, flatten: true}}
init: {{kernel: glorot_uniform, bias: zeros}}
optimizer: {{name: adam, learning_rate: 1.0e-3, beta1: 0.9, beta2: 0.999, epsilon: 1.0e-8}}
train: {{batch_size: 4, epochs: 1, seed: 0}}
dtype: float64
"""
COMMITMENT = "commitment: {weight: 0.25, features: mean, batch: mean}"
CODEBOOK = "codebook: {weight: 1.0, features: mean, batch: mean}"


def vq_spec(tmp_path, ema: bool = False):
    """A dense model whose 4-d code is 2 vectors of 2, quantized with 3 codes."""
    from aebench.spec.load import load_spec

    update = "update: ema, decay: 0.9, epsilon: 0.01" if ema else "update: gradient"
    terms = COMMITMENT if ema else f"{CODEBOOK}\n  {COMMITMENT}"
    path = tmp_path / ("vq_ema.yaml" if ema else "vq.yaml")
    path.write_text(VQ_SPEC.format(update=update, terms=terms))
    return load_spec(path)


def vq_plan(codes: int = 3, ema: bool = False, shape: tuple[int, ...] = (2, 2)):
    """A planned vector quantizer 'decoder.1' of ``codes`` codes on (n, D) input ``shape``."""
    from aebench.layers.base import LayerPlan
    from aebench.layers.vector_quantizer import VectorQuantizer

    if ema:
        layer = VectorQuantizer("vector_quantizer", codes, "ema", 0.9, 0.01)
    else:
        layer = VectorQuantizer("vector_quantizer", codes, "gradient")
    return LayerPlan("decoder.1", layer, shape, shape, ())


def test_the_quantizer_picks_the_nearest_code_and_the_first_of_equal_ones() -> None:
    """Codes (1, 0), (0, 1), (1, 0) again: (0.9, 0.2) is nearest the first; (0, 0) is as near all
    three (distance 1 exactly) and (1, 0) is both the first and the third: the lowest index wins."""
    from aebench.layers import Tape, apply_layer

    codebook = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    x = np.array([[[0.9, 0.2], [0.0, 0.0]], [[0.1, 0.8], [1.0, 0.0]]])
    tape = Tape()
    out = apply_layer(vq_plan(), {"decoder.1.embeddings": codebook}, x, tape=tape)[1]
    np.testing.assert_array_equal(tape.taps["decoder.1"]["indices"], [[0, 0], [1, 0]])
    np.testing.assert_allclose(out, codebook[[[0, 0], [1, 0]]], atol=1e-16)  # z + (z_q - z): z_q up to rounding
    np.testing.assert_array_equal(tape.taps["decoder.1"]["input"], x)


def test_the_expanded_distance_is_the_squared_distance_in_float64() -> None:
    from aebench.layers.vector_quantizer import distances

    rng = np.random.default_rng(0)
    z, codebook = rng.standard_normal((50, 8)), rng.standard_normal((20, 8))
    direct = ((z[:, None, :] - codebook[None]) ** 2).sum(axis=2)
    np.testing.assert_allclose(distances(z, codebook), direct, rtol=1e-13, atol=1e-13)


def test_the_ema_update_quantizes_first_then_moves_the_averages_and_smooths_the_counts() -> None:
    """Codes (0, 0), (10, 10), (5, 5); the batch (1, 1), (3, 3), (9, 9) picks 0, 2 and 1 (by the
    codebook as it was: the output is those codes). With decay 0.9, epsilon 0.01 and counts and
    sums (1, 1, 1), (0, 0)x3: N = 0.9 + 0.1 = 1 each, m_0 = (0.1, 0.1), m_1 = (0.9, 0.9), m_2 =
    (0.3, 0.3); Laplace: N_k = (1 + 0.01) / (3 + 3 x 0.01) x 3 = 1, so e_k = m_k."""
    from aebench.layers.base import kind_of

    plan = vq_plan(codes=3, ema=True, shape=(3, 2))
    weights = {
        "decoder.1.embeddings": np.array([[0.0, 0.0], [10.0, 10.0], [5.0, 5.0]]),
        "decoder.1.cluster_size": np.ones(3),
        "decoder.1.embedding_sum": np.zeros((3, 2)),
    }
    x = np.array([[[1.0, 1.0], [3.0, 3.0], [9.0, 9.0]]])
    out, state = kind_of(plan.layer).train_oracle(plan, weights, x, {})
    np.testing.assert_allclose(out, [[[0.0, 0.0], [5.0, 5.0], [10.0, 10.0]]], atol=1e-15)
    np.testing.assert_allclose(state["decoder.1.cluster_size"], [1.0, 1.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(state["decoder.1.embedding_sum"], [[0.1, 0.1], [0.9, 0.9], [0.3, 0.3]], rtol=1e-15)
    np.testing.assert_allclose(state["decoder.1.embeddings"], [[0.1, 0.1], [0.9, 0.9], [0.3, 0.3]], rtol=1e-14)
    assert kind_of(plan.layer).oracle(plan, weights, x).shape == x.shape  # evaluation: no state


def test_codebook_and_commitment_are_equal_in_value_and_reduce_as_stated(tmp_path) -> None:
    """Both are the mean over every element of (z_e - z_q)^2 here (PyTorch-VAE's F.mse_loss); with
    ``features: sum`` the commitment term is that times the 4 values of each example."""
    import dataclasses

    from aebench.check import equivalence as eq

    case = eq.make_case(vq_spec(tmp_path))
    terms = oracle.loss_terms(case.spec, case.weights, case.batch, case.plan)
    fwd = oracle.forward(case.spec, case.weights, case.batch, case.plan, {})
    taps = fwd.taps["decoder.1"]
    mse = float(((taps["input"] - taps["codes"]) ** 2).mean())
    assert terms["codebook"] == terms["commitment"] == pytest.approx(mse, rel=1e-15)
    assert terms["total"] == pytest.approx(terms["reconstruction"] + mse + 0.25 * mse, rel=1e-15)
    summed = dataclasses.replace(case.spec.loss.commitment, features="sum")
    spec = case.spec.replace(loss=dataclasses.replace(case.spec.loss, commitment=summed))
    assert oracle.loss_terms(spec, case.weights, case.batch, case.plan)["commitment"] == pytest.approx(4 * mse)


def test_finite_differences_replay_what_is_held_so_they_give_the_straight_through_gradient(tmp_path) -> None:
    """The loss is piecewise constant in the code through the quantizer; autodiff differentiates
    the surrogate z + sg(z_q - z). A difference of the oracle that replays the held values (the
    picked codes, z_q - z, the terms' stopped sides) gives that gradient (fd_entry's); the plain
    difference of the loss is (1 + 0.25) x 2 (z_e - z_q) / (4 B) summed over the batch for the
    code unit moved: both terms count, and the decoder's gradient through the quantizer is lost."""
    from aebench.check import equivalence as eq
    from aebench.layers import Tape

    case = eq.make_case(vq_spec(tmp_path))
    tape = Tape()
    oracle.loss_terms(case.spec, case.weights, case.batch, case.plan, tape=tape)
    assert {"decoder.1.indices", "decoder.1.straight_through", "loss.codebook.decoder.1"} <= set(tape.held)

    def total(bias: float, replay: bool) -> float:
        weights = dict(case.weights, **{"code.bias": case.weights["code.bias"] + np.array([bias, 0, 0, 0])})
        held = tape.replay() if replay else None
        return oracle.loss_terms(case.spec, weights, case.batch, case.plan, tape=held)["total"]

    h = 1e-6
    surrogate = (total(h, True) - total(-h, True)) / (2 * h)
    plain = (total(h, False) - total(-h, False)) / (2 * h)
    assert eq.fd_entry(case, "code.bias", 0) == pytest.approx(surrogate, rel=1e-12)
    taps = oracle.forward(case.spec, case.weights, case.batch, case.plan, {}).taps["decoder.1"]
    gap = (taps["input"] - taps["codes"])[:, 0, 0]  # the first vector's first value: code unit 0
    both_terms = 2 * (1.0 + 0.25) * gap.sum() / (4 * gap.size)  # each term the mean over B x 4 values
    assert plain == pytest.approx(both_terms, rel=1e-6)
    assert abs(surrogate - plain) > 1e-3 * abs(plain)


def test_perplexity_is_one_for_one_code_and_k_for_k_codes_used_alike() -> None:
    from aebench.losses._quantizers import perplexity, usage

    assert perplexity(usage(np.zeros(10, int), 8)) == pytest.approx(1.0)
    assert perplexity(usage(np.arange(16) % 4, 8)) == pytest.approx(4.0)
    np.testing.assert_array_equal(usage(np.array([0, 2, 2]), 4), [1, 0, 2, 0])


def test_the_commitment_term_scores_the_test_codes_the_decoder_picks(tmp_path) -> None:
    """Its quality metrics run the decoder in NumPy on the encodings up to the quantizer: codes
    picked by the first and third vectors only give perplexity 2 and 2 codes used."""
    from aebench.losses import term_quality
    from aebench.losses.base import QualityInputs
    from aebench.plugins.canonical import init_weights
    from aebench.spec.shapes import plan_model

    spec = vq_spec(tmp_path)
    plan = plan_model(spec)
    weights = init_weights(plan, "glorot_uniform", 0)
    weights["decoder.1.embeddings"] = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    code = np.array([[0.9, 0.0, -1.0, -0.8], [1.0, 0.1, -0.9, -1.2]])  # vectors pick 0, 2, 0, 2
    unused_decoder = lambda z: pytest.fail("perplexity decodes nothing")  # noqa: E731
    x, rng = np.zeros((2, 784)), np.random.default_rng(0)
    inputs = QualityInputs(spec, plan, {"code": code}, rng, x, unused_decoder, weights)
    metrics = term_quality(spec.loss, inputs)
    assert metrics == {"test_code_perplexity": pytest.approx(2.0), "test_codes_used": 2.0}
