"""The memory a spec needs counts its data set and the quality step's NLL (issue 18, item 11):
a class count whose one-hot labels cannot fit is refused by validate, an --nll-k whose decodes
cannot fit is refused by train before any framework loads, and both estimates stay below what
the code really allocates (measured with tracemalloc)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from test_quality import LinearGaussianVAE, toy_spec  # tests/ is on sys.path (pytest prepend import mode)

from aebench.data import datasets
from aebench.data.datasets import (
    bundled_mnist_path,
    load_dataset,
    mnist_examples,
    one_hot,
    split_sizes,
)
from aebench.scoring import QualitySettings
from aebench.spec.load import load_spec
from aebench.spec.memory import SHIPPED_MNIST_EXAMPLES, largest_nll_k, memory_need, nll_values, physical_memory_bytes
from aebench.spec.shapes import plan_model
from aebench.train.quality import importance_log_weights, nll_from_log_weights

FRAMEWORKS = ("torch", "jax", "tensorflow", "keras", "flax")


def cvae_with(tmp_path: Path, classes: int) -> Path:
    path = tmp_path / "wide.yaml"
    path.write_text(f"extends: cvae\nmodel:\n  conditioning: {{labels: true, num_classes: {classes}}}\n")
    return path


def wide_cvae(classes: int):
    spec = load_spec("cvae")
    conditioning = dataclasses.replace(spec.model.conditioning, num_classes=classes)
    return spec.replace(model=dataclasses.replace(spec.model, conditioning=conditioning))


def aebench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aebench.cli", *args], capture_output=True, text=True, timeout=60)


def test_one_hot_labels_that_cannot_fit_are_refused_by_validate_naming_the_class_count(tmp_path: Path) -> None:
    classes = physical_memory_bytes() // 50_000  # the one-hot rows of 12,000 examples take 96 KB per class
    path = cvae_with(tmp_path, classes)
    proc = aebench("validate", str(path))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    line = proc.stderr
    assert line.startswith(f"error: {path}: model.conditioning.num_classes: the spec needs about"), line
    assert "for the data set of 12,000 examples in float64" in line and "this machine has" in line, line


def test_what_validate_refuses_there_is_the_data_set_not_the_training_step() -> None:
    need = memory_need(wide_cvae(physical_memory_bytes() // 50_000), sizes=SHIPPED_MNIST_EXAMPLES)
    assert need.parameter_bytes + need.activation_bytes < physical_memory_bytes() < need.total_bytes


def test_an_nll_k_whose_decodes_cannot_fit_is_refused_before_any_framework_loads(tmp_path: Path) -> None:
    classes = physical_memory_bytes() // 400_000  # at k = 100,000 each class costs 800 KB of decoded labels
    path, out = cvae_with(tmp_path, classes), tmp_path / "run"
    probe = (
        "import sys\n"
        "from aebench.cli.main import main\n"
        f"code = main(['train', {str(path)!r}, '--nll-k', '100000', '--out', {str(out)!r}])\n"
        f"print(code, sorted(f for f in {FRAMEWORKS!r} if f in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "2 []", proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("aebench: error: --nll-k: 100,000 "), proc.stderr
    assert "with the NLL at k = 100,000" in proc.stderr and "allowed here: at most" in proc.stderr
    assert not out.exists()
    assert aebench("validate", str(path)).returncode == 0  # at the default k it fits


def test_the_largest_nll_k_stated_is_the_largest_that_fits() -> None:
    spec, plan = load_spec("cvae"), plan_model(load_spec("cvae"))
    quality, available = QualitySettings(k=50_000), 3 * 10**9
    most = largest_nll_k(spec, plan, SHIPPED_MNIST_EXAMPLES, quality, available)
    sizes = SHIPPED_MNIST_EXAMPLES
    need = [memory_need(spec, plan, sizes=sizes, quality=QualitySettings(k=k)) for k in (most, most + 1)]
    assert need[0].total_bytes <= available < need[1].total_bytes


def traced_peak(call) -> int:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("k, examples, classes", [(5000, 3, 0), (300, 40, 50), (200, 200, 10)])
def test_the_nll_estimate_is_below_what_scoring_allocates_and_close_to_it(k: int, examples: int, classes: int) -> None:
    """One decode chunk (k beyond decode_rows: one example per chunk) or the log weights of all."""
    spec, model, quality = toy_spec(), LinearGaussianVAE(), QualitySettings(k=k, nll_examples=examples)
    x = np.random.default_rng(0).normal(size=(examples, 2))
    labels = one_hot(np.arange(examples) % classes, classes) if classes else None

    def score() -> None:
        log_w, _, _ = importance_log_weights(model, None, spec, x, labels, k, quality.decode_rows)
        nll_from_log_weights(log_w)

    estimate = 8 * nll_values(dataclasses.replace(plan_model(spec), label_size=classes), quality, examples)
    measured = traced_peak(score)
    assert estimate <= measured <= 2 * estimate, (estimate, measured)


def test_the_data_estimate_is_below_what_training_holds() -> None:
    spec = load_spec("cvae")
    sizes = split_sizes(spec)
    assert sizes == mnist_examples(bundled_mnist_path()) == SHIPPED_MNIST_EXAMPLES

    def hold() -> None:
        data = load_dataset(spec)
        hold.kept = (data, one_hot(data.y_train, 10), one_hot(data.y_test, 10))  # type: ignore[attr-defined]

    tracemalloc.start()
    try:
        hold()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    estimate = memory_need(spec, sizes=sizes).data_bytes
    assert estimate <= held <= 1.1 * estimate, (estimate, held)


def test_mnist_sizes_come_from_the_headers_and_a_broken_file_counts_as_the_shipped_subset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "m.npz"
    arrays = {"x_train": np.zeros((7, 28, 28), np.uint8), "x_test": np.zeros((3, 28, 28), np.uint8)}
    np.savez_compressed(path, **arrays, y_train=np.zeros(7, np.uint8), y_test=np.zeros(3, np.uint8))
    assert mnist_examples(path) == (7, 3)
    cut = tmp_path / "cut.npz"
    cut.write_bytes(path.read_bytes()[:100])
    assert mnist_examples(cut) == SHIPPED_MNIST_EXAMPLES
    monkeypatch.setattr(datasets, "MAX_NPZ_BYTES", 4096)  # as a bomb is to the real 1 GiB bound: loading refuses it
    assert mnist_examples(path) == SHIPPED_MNIST_EXAMPLES
