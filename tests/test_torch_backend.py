"""PyTorch-specific traps (docs/EQUIVALENCE.md): each test fails if the trap comes back."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0 'aebench[torch]')")

from cases import conv2d, conv2d_transpose, suite_spec, switches_of  # noqa: E402

from aebench.backends.torch.model import CroppedConvTranspose2d, PaddedConv2d  # noqa: E402
from aebench.backends.torch.train import ReferenceAdam, StockAdam  # noqa: E402
from aebench.layers.conv import Conv  # noqa: E402
from aebench.layers.conv_transpose import ConvTranspose  # noqa: E402
from aebench.plugins.registry import load_backend, precision_switches  # noqa: E402
from aebench.spec.load import load_spec  # noqa: E402
from aebench.spec.shapes import plan_model  # noqa: E402
from aebench.spec.types import ExponentialSchedule, WeightDecay  # noqa: E402


def conv_layers(spec_name: str, kind: type):
    plan = plan_model(load_spec(spec_name))
    return [p for p in plan.layers if isinstance(p.layer, kind)]


def run_nhwc(module, kernel: np.ndarray, bias: np.ndarray, x: np.ndarray):
    """Load a canonical kernel into a torch conv module; returns (its NHWC output, the NCHW input)."""
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1)))
        module.bias.copy_(torch.from_numpy(bias))
        nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
        return module(nchw).permute(0, 2, 3, 1).numpy(), nchw


def test_same_conv_at_stride_2_pads_bottom_right_like_the_oracle() -> None:
    plan = conv_layers("vae_conv", Conv)[0]
    module = PaddedConv2d(plan).double()
    rng = np.random.default_rng(0)
    x, kernel, bias = rng.random((2, 28, 28, 1)), rng.normal(size=(3, 3, 1, 32)), rng.normal(size=32)
    ours, nchw = run_nhwc(module, kernel, bias, x)
    with torch.no_grad():
        symmetric = torch.nn.functional.conv2d(nchw, module.weight, module.bias, stride=2, padding=1)
    expected = conv2d(x, kernel, bias, 2, "same")
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    assert symmetric.shape == (2, 32, 14, 14)  # same shape, different values: the trap
    assert np.abs(symmetric.permute(0, 2, 3, 1).numpy() - expected).max() > 1e-2


def test_transposed_conv_is_aligned_where_padding_1_output_padding_1_shifts() -> None:
    plan = conv_layers("vae_conv", ConvTranspose)[0]
    module = CroppedConvTranspose2d(plan).double()
    rng = np.random.default_rng(1)
    x, kernel, bias = rng.random((2, 7, 7, 64)), rng.normal(size=(3, 3, 64, 64)), rng.normal(size=64)
    ours, nchw = run_nhwc(module, kernel, bias, x)
    with torch.no_grad():
        shifted = (
            torch.nn.functional.conv_transpose2d(
                nchw, module.weight, module.bias, stride=2, padding=1, output_padding=1
            )
            .permute(0, 2, 3, 1)
            .numpy()
        )
    expected = conv2d_transpose(x, kernel, bias, 2, "same")
    np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    assert shifted.shape == expected.shape
    assert np.abs(shifted - expected).max() > 1e-2


def test_reference_adam_is_bit_identical_to_torch_optim_adam() -> None:
    opt = load_spec("vae_dense").optimizer
    rng = np.random.default_rng(2)
    start = [torch.tensor(rng.normal(size=(5, 3))), torch.tensor(rng.normal(size=7))]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    stock = [torch.nn.Parameter(t.clone()) for t in start]
    reference, torch_adam = ReferenceAdam(ours, opt), StockAdam(stock, opt)
    for _ in range(50):
        grads = [torch.tensor(rng.normal(size=t.shape)) for t in start]
        reference.step(grads)
        torch_adam.step([g.clone() for g in grads])
    for a, b in zip(ours, stock):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("form", ["coupled", "decoupled"])
def test_reference_adam_with_decay_and_schedule_is_bit_identical_to_torch(form: str) -> None:
    """Coupled: torch.optim.Adam(weight_decay=); decoupled: torch.optim.AdamW, p *= 1 - lr * wd
    as a float64 host factor; both with ExponentialLR stepped every 5 updates, whose rates are
    the previous rate times gamma (lr * gamma**k differs in the last bit from k = 6)."""
    schedule = ExponentialSchedule("exponential", 0.95, "epoch")
    opt = replace(load_spec("vae_dense").optimizer, weight_decay=WeightDecay(form, 0.01), schedule=schedule)
    rng = np.random.default_rng(3)
    start = [torch.tensor(rng.normal(size=(5, 3))), torch.tensor(rng.normal(size=7))]
    ours = [torch.nn.Parameter(t.clone()) for t in start]
    stock = [torch.nn.Parameter(t.clone()) for t in start]
    reference, torch_adam = ReferenceAdam(ours, opt, 5), StockAdam(stock, opt, steps_per_epoch=5)
    assert isinstance(torch_adam.inner, torch.optim.AdamW) == (form == "decoupled")
    for _ in range(50):
        grads = [torch.tensor(rng.normal(size=t.shape)) for t in start]
        reference.step(grads)
        torch_adam.step([g.clone() for g in grads])
    for a, b in zip(ours, stock):
        assert torch.equal(a.detach(), b.detach())


def test_tf32_is_off_after_the_backend_loads() -> None:
    """ieee-fp32, this process's precision, is applied when the backend loads and read back:
    TF32 off for matmuls and cuDNN convolutions (torch leaves the latter on by default)."""
    load_backend("torch")
    assert not torch.backends.cuda.matmul.allow_tf32
    assert not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest"
    assert precision_switches("torch") == switches_of("torch", "ieee-fp32")


def test_data_lives_on_cuda_when_there_is_one() -> None:
    backend = load_backend("torch")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert backend.device().startswith(expected)
    spec = load_spec("vae_toy")
    model = backend.build(spec)
    trainer = backend.trainer(model, np.zeros((4, 2)), None)
    assert trainer.x.device.type == expected
    assert next(model.parameters()).device.type == expected


def test_every_convolution_sees_nchw_contiguous_activations(spec_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """One memory format for every image activation, so inductor's fake convolution_backward
    and cuDNN cannot disagree on strides (the H100 failure of torch compiled on vae_conv)."""
    spec = suite_spec(spec_name)
    plan = plan_model(spec)
    convs = [p for p in plan.layers if isinstance(p.layer, (Conv, ConvTranspose))]
    if not convs:
        pytest.skip(f"{spec_name} has no convolution")
    model = load_backend("torch").build(spec)
    seen: list[bool] = []
    for op in ("conv2d", "conv_transpose2d"):
        original = getattr(torch.nn.functional, op)

        def recording(x, *args, _original=original, **kwargs):
            seen.append(x.is_contiguous())
            return _original(x, *args, **kwargs)

        monkeypatch.setattr(torch.nn.functional, op, recording)
    x = torch.rand(4, *plan.data_shape, dtype=next(model.parameters()).dtype)
    labels = torch.eye(plan.label_size, dtype=x.dtype)[:4] if plan.label_size else None
    model.decode_logits(model.head(plan.heads[0].name, model.hidden(x, labels))[:, : spec.model.latent.size], labels)
    assert seen == [True] * len(convs)
