"""Data: the bundled subset, where MNIST is looked for, npz checks, fast-failing downloads."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest

from aebench.cli.main import main
from aebench.data.datasets import (
    bundled_mnist_path,
    fetch_mnist,
    find_mnist,
    height_weight,
    keras_cache_path,
    load_dataset,
    read_mnist_npz,
)
from aebench.errors import DataError
from aebench.spec.load import load_spec
from aebench.spec.types import HeightWeight


def test_the_bundled_subset_is_small_real_mnist() -> None:
    path = bundled_mnist_path()
    assert path.stat().st_size <= 3 * 1024 * 1024
    arrays = read_mnist_npz(path)
    assert arrays["x_train"].shape == (10000, 28, 28) and arrays["x_test"].shape == (2000, 28, 28)
    assert set(np.unique(arrays["y_train"])) == set(range(10))
    assert 30 < arrays["x_train"].mean() < 37  # MNIST's pixel mean is 33.3


def test_the_bundled_subset_is_the_start_of_the_full_data(full_mnist: Path) -> None:
    full, subset = read_mnist_npz(full_mnist), read_mnist_npz(bundled_mnist_path())
    for key, n in (("x_train", 10000), ("y_train", 10000), ("x_test", 2000), ("y_test", 2000)):
        np.testing.assert_array_equal(subset[key], full[key][:n])


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_mnist: Path) -> None:
    assert find_mnist() == bundled_mnist_path()
    cache = keras_cache_path()
    cache.parent.mkdir(parents=True)
    cache.symlink_to(full_mnist)
    assert find_mnist() == cache
    monkeypatch.setenv("AEBENCH_MNIST", str(full_mnist))
    assert find_mnist() == full_mnist
    explicit = tmp_path / "explicit.npz"
    explicit.symlink_to(full_mnist)
    assert find_mnist(explicit) == explicit


def test_full_mnist_loads_in_the_spec_layout(full_mnist: Path) -> None:
    data = load_dataset(load_spec("vae_conv"), full_mnist)
    assert data.x_train.shape == (60000, 28, 28, 1) and data.x_test.shape == (10000, 28, 28, 1)
    assert 0.0 == data.x_train.min() and data.x_train.max() == 1.0
    assert load_dataset(load_spec("vae_dense"), full_mnist).x_test.shape == (10000, 784)


def test_a_missing_explicit_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="--data: no MNIST file at"):
        find_mnist(tmp_path / "nope.npz")
    monkeypatch.setenv("AEBENCH_MNIST", str(tmp_path / "gone.npz"))
    with pytest.raises(DataError, match="AEBENCH_MNIST: no MNIST file at"):
        find_mnist()


def test_pickled_npz_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.npz"
    np.savez(path, x_train=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="not a readable npz file"):
        read_mnist_npz(path)


def test_wrong_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.npz"
    np.savez(
        path,
        x_train=np.zeros((2, 28, 28), np.uint8),
        y_train=np.zeros(2, np.uint8),
        x_test=np.zeros((2, 32, 32), np.uint8),
        y_test=np.zeros(2, np.uint8),
    )
    with pytest.raises(DataError, match=r"x_test: expected uint8 of shape \(N, 28, 28\)"):
        read_mnist_npz(path)


def test_height_weight_is_deterministic_and_standardised() -> None:
    cfg = HeightWeight("height_weight", 512, 64, 3)
    a, b = height_weight(cfg), height_weight(cfg)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_allclose(a.x_train.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(a.x_train.std(axis=0), 1, atol=1e-12)
    assert np.corrcoef(a.x_train.T)[0, 1] > 0.9  # weight follows height - 105
    assert a.x_test.shape == (64, 2) and a.y_train is None


def test_download_fails_fast_when_nothing_answers(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a loopback port that is closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(DataError, match="could not download MNIST.*put a Keras-layout mnist.npz"):
        fetch_mnist(tmp_path / "m.npz", url=f"http://127.0.0.1:{port}/mnist.npz", timeout=2)
    assert time.monotonic() - start < 2


def test_download_gives_up_after_its_timeout(tmp_path: Path) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)  # accepts the connection but never answers
    try:
        start = time.monotonic()
        with pytest.raises(DataError, match="timed out"):
            fetch_mnist(tmp_path / "m.npz", url=f"http://127.0.0.1:{server.getsockname()[1]}/m.npz", timeout=1)
        assert time.monotonic() - start < 5
    finally:
        server.close()
    assert not (tmp_path / "m.npz").exists()


def test_fetch_command_reports_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = main(
        ["fetch-mnist", "--dest", str(tmp_path / "m.npz"), "--url", f"http://127.0.0.1:{port}/x", "--timeout", "2"]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--data PATH" in err
