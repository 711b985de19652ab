"""Every tolerance of the equivalence checks, stated once, with the reason for its size.

Errors are relative: |got - ref| / max(|ref|, floor), where the floor (given per quantity)
keeps a value that is tiny next to its neighbours from being judged on its own scale.
"""

from __future__ import annotations

# Loss terms against the float64 NumPy oracle, per dtype of the backend under test.
LOSS_RTOL = {
    # float64: both sides compute the same formula in IEEE double; only summation order
    # differs (measured <= 1.1e-15 on every shipped spec). Anything above 1e-10 is a
    # semantic difference (layout, padding, reduction), not rounding.
    "float64": 1e-10,
    # float32: rounding of sums over up to 784 x batch elements and of exp/log
    # (measured <= 8.2e-7, vae_conv's 784-pixel BCE sum); 1e-5 leaves a 10x margin while a
    # semantic error (e.g. one-pixel shift in a transposed convolution) is > 1e-3.
    "float32": 1e-5,
}
# Floor of the relative error of a term, as a fraction of |total|: the KL of a 2-d latent
# (about 0.007 next to a BCE of 561) is judged on the scale of the loss it is part of.
LOSS_FLOOR_OF_TOTAL = 1e-6

# Float64 gradients against central finite differences of the float64 oracle.
# Step: rounding error of the difference is about eps * |f| / h = 2.2e-16 * 561 / 1e-6
# ~ 1.2e-7; truncation error h^2 |f'''| / 6 is below that.
FD_STEP = 1e-6
# Error as a fraction of the largest |gradient| in the same array: ReLU kinks crossed by
# the +-h step move single entries by up to ~1e-5 of that (measured worst 9.3e-6, vae_conv);
# a wrong kernel layout or padding is wrong by O(1).
FD_TOL = 1e-4
# An entry whose difference at FD_STEP misses FD_TOL is measured again at FD_STEP /
# FD_RETRY_DIVISOR, and the smaller error counts: a first-layer kernel entry of vae_conv_bn64
# moves 8 x 32 x 32 x 32 batch-normalised pre-activations, and the +-1e-6 step carries a few of
# them across leaky_relu's kink (measured: 7.0e-4 of the layer's largest gradient, identical on
# torch and jax, which agree with each other to 1e-14); a ten times smaller step crosses about a
# tenth as many, with rounding still below 1e-6 of the gradients there. A wrong gradient is
# wrong at both steps.
FD_RETRY_DIVISOR = 10.0
# Entries checked per weight array: the largest-gradient entry plus random ones.
FD_SAMPLES_PER_ARRAY = 3

# Encoder and decoder outputs against the oracle: LOSS_RTOL, applied to the largest
# error in the array as a fraction of the array's largest |value| (an entry near zero is
# judged on the array's scale, as a float32 matmul over 784 inputs rounds it).

# Gradients across backends (each backend's gradients against the float64 gradients of
# the reference backend, which match finite differences), as a fraction of the array's
# largest |gradient|. float64: the same formula in double, only summation order differs
# (measured <= 5.7e-15). float32: rounding through the whole backward pass (measured
# <= 1.4e-6, vae_conv); 1e-5 leaves a 7x margin, a layout or padding bug is O(1).
GRAD_TOL = {"float64": 1e-10, "float32": 1e-5}
# A float32 gradient is never held closer than the reference backend's own float32 gradients
# agree with its float64 ones when the point moves by rounding: GRADIENT_NUDGES starts, each
# weight multiplied by 1 +- NUDGE_ULPS float32 ulps (sign drawn per weight), and an array that
# misses GRAD_TOL may differ by GRAD_SPREAD_MARGIN times the largest such distance. This matters
# where the point lies within float32 rounding of a kink: vae_conv_bn64 at its shipped size has
# 2 million leaky_relu inputs per batch of 8, about 20 of them within 1e-6 of their layer's
# largest; one at encoder.9 (1.3e-6 in float64) rounds to the other side in jax's float32,
# its slope goes from 1 to 0.01, and batch_norm over 32 values per channel spreads that into
# 9.8e-2 of encoder.8.kernel's largest gradient. torch's float32 gradients at one of four such
# nudged starts miss by the same 9.8e-2 (the same input crossing), at the other three by 2e-3
# to 2.7e-2 (results/cpu-2026-12-02). Both sides of a kink are correct float32 results; the
# float64 comparison (1e-10) stays the semantic check. 2x: the backend's own rounding is one
# more such draw, from the same distribution as the four.
GRADIENT_NUDGES = 4
GRAD_SPREAD_MARGIN = 2.0

# TRAJECTORY_STEPS reference-Adam steps from the same weights on the same batches, against
# the reference backend. Losses: every term at every step, relative (floor as for loss
# terms). Weights: the largest difference as a fraction of the array's largest |weight|.
# float64: 1e-8 as the design asks (measured <= 6.1e-15 losses, 1.5e-12 weights).
# float32: Adam divides each update by sqrt(v), so where a gradient entry is near zero its
# float32 rounding decides the sign of a learning-rate-sized step, and such entries drift
# apart by O(lr) per step while the losses stay close. Measured over 50 steps: losses
# <= 1.2e-3 (the KL of vae_conv's 2-d latent; the total <= 2.3e-5), weights <= 7.7e-2
# (vae_conv, torch against the XLA backends: 8.7e-3 absolute = 8.7 steps of lr 1e-3).
# The float64 trajectory is the semantic check; the float32 one bounds rounding drift.
TRAJECTORY_LOSS_RTOL = {"float64": 1e-8, "float32": 5e-3}
TRAJECTORY_WEIGHT_TOL = {"float64": 1e-8, "float32": 0.25}
# The same trajectories where either backend runs on a GPU. Measured once, on one H100
# (commit e561b1f, results/gpu-h100-2026-11-22/evidence/check-float32-gpu.txt; torch 2.11 as the
# reference, jax 0.11.2 and Keras 3.15.1 on JAX, the frameworks' default kernels): vae_dense
# losses <= 5.5e-7, weights <= 9.4e-5, as on the CPU; vae_conv losses 8.1e-3 (the KL of its
# 2-d latent) and weights 0.365 (decoder.3.kernel, the one-channel transposed convolution).
# cuDNN and XLA:GPU choose convolution-backward kernels by autotuning, and they sum in
# different orders (split reductions, atomics), so near-zero gradient entries of that kernel
# get opposite signs in two frameworks and Adam moves them lr = 1e-3 a step apart: 50 steps
# are 0.05 absolute, about 0.36 of that kernel's largest weight. The float32 GPU bounds below
# are 2.5x (losses) and 1.6x (weights) that one measurement: they bound rounding drift only;
# the semantic check stays the float64 trajectory (1e-8, not yet run on a GPU).
GPU_TRAJECTORY_LOSS_RTOL = {"float64": 1e-8, "float32": 2e-2}
GPU_TRAJECTORY_WEIGHT_TOL = {"float64": 1e-8, "float32": 0.6}


def on_gpu(device: str) -> bool:
    """Whether a backend's device description (Backend.device()) names an accelerator."""
    return device != "cpu" and not device.startswith("cpu")


def trajectory_tolerances(dtype: str, *devices: str) -> tuple[float, float]:
    """(loss, weight) tolerances of a trajectory comparison between runs on ``devices``:
    the GPU bounds when any of them ran on a GPU, else the CPU ones."""
    if any(on_gpu(d) for d in devices):
        return GPU_TRAJECTORY_LOSS_RTOL[dtype], GPU_TRAJECTORY_WEIGHT_TOL[dtype]
    return TRAJECTORY_LOSS_RTOL[dtype], TRAJECTORY_WEIGHT_TOL[dtype]


# A trajectory is never held closer than the reference backend agrees with itself: its run from
# a start nudged by NUDGE_ULPS units in the last place of the dtype (every weight times
# 1 +- NUDGE_ULPS * eps, the sign drawn per weight) gives, per compared quantity, how far rounding
# alone moves it, and the other backends may differ by ROUNDING_SPREAD_MARGIN times that. Nearly
# everywhere this is far below the tolerances above and changes nothing. It matters where the
# training amplifies rounding: a bias straight before batch_norm has a gradient of pure rounding,
# which Adam turns into steps of lr * g / epsilon (measured, float64: such biases 3e-6 and the
# running mean after them 7e-7 apart after 50 steps, torch against jax, while the losses agree to
# 1e-14; docs/EQUIVALENCE.md, 'Batch normalisation'). 10x: frameworks round differently at every
# step, the nudge once, so their spread may exceed the nudge's by a few times; a semantic error (a
# layout, a wrong update) is orders of magnitude above rounding. A sign per weight, not one common
# factor: batch norm undoes a common scale of the kernels before it, and such a nudge understated
# rounding (measured, vae_conv_bn64 at its shipped size in float32: jax's KL left torch's by 4.4e-2
# over 7 steps while the commonly scaled run stayed within 1.55e-3; with signs drawn, within bounds).
# Where the training is chaotic at the dtype's precision, a loss term of the nudged run leaves
# the reference's by more than the loss tolerance after some step, and the steps after it say
# nothing about an implementation (two correct runs of one framework part there): the trajectory
# is then compared over the steps before it only (reference_trajectory), and says so. Every term
# decides, not the total alone: a term of little weight (the KL at beta 0.00025 of vae_conv_bn64)
# may part sooner. Measured predictable steps, torch as the reference: vae_conv_bn64 at its
# shipped size 6 in float32 and 27 in float64 (keras-torch's float64, nudged at float32: 6); at its
# test size 4 in float32 (keras-torch's float64: 3); every other shipped spec all 50 at its test
# size. The float64 trajectory of every shipped spec at its test size is predictable for all 50
# steps, and the suite fails if one is not: the float64 trajectory is the semantic check.
NUDGE_ULPS = 8
ROUNDING_SPREAD_MARGIN = 10.0

TRAJECTORY_STEPS = 50
TRAJECTORY_BATCH = 32
# The trajectory's own epoch for a per-epoch learning-rate schedule: 50 steps cross 4 epoch
# boundaries (the spec's epoch, len(train) // batch_size, may be longer than the trajectory).
TRAJECTORY_EPOCH_STEPS = 10
