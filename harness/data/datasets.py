"""Data sets: MNIST from a Keras-layout npz, and seed 000's height/weight table.

Where MNIST is looked for, in order: the ``--data`` path, the ``AEBENCH_MNIST`` environment
variable, Keras' cache (``$KERAS_HOME/datasets/mnist.npz``, default ``~/.keras``), then the
real MNIST subset shipped inside aebench (the first 10,000 training and 2,000 test images),
so the main job runs offline. Files are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from aebench.errors import DataError
from aebench.spec.types import HeightWeight, Mnist, Spec

MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
MNIST_SHA256 = "06af5dfe73b70e3bc1c36439982b18a8d76803db9b544f6fdf838a37fbb01b64"
MNIST_ENV = "AEBENCH_MNIST"
_MNIST_LAYOUT = {"x_train": (28, 28), "y_train": (), "x_test": (28, 28), "y_test": ()}


@dataclass(frozen=True)
class Dataset:
    """A train/test split in float64, examples shaped as the spec's data; integer labels
    where the data has them."""

    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]
    source: str


def keras_cache_path() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets" / "mnist.npz"


def bundled_mnist_path() -> Path:
    return Path(str(importlib.resources.files("aebench.bundled"))) / "mnist_subset.npz"


def find_mnist(explicit: Optional[str | Path] = None) -> Path:
    """The MNIST file to use: explicit path, then $AEBENCH_MNIST, the Keras cache, the bundled subset."""
    for origin, candidate in (("--data", explicit), (MNIST_ENV, os.environ.get(MNIST_ENV))):
        if candidate:
            path = Path(candidate).expanduser()
            if not path.is_file():
                raise DataError(f"{origin}: no MNIST file at {path}; expected a Keras-layout mnist.npz")
            return path
    cached = keras_cache_path()
    return cached if cached.is_file() else bundled_mnist_path()


def read_mnist_npz(path: Path) -> dict[str, np.ndarray]:
    """The four arrays of a Keras-layout mnist.npz, checked; DataError naming the file otherwise."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in _MNIST_LAYOUT if key in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable npz file ({exc})") from None
    for key, shape in _MNIST_LAYOUT.items():
        if key not in arrays:
            raise DataError(f"{path}: {key}: missing; a Keras-layout mnist.npz holds {', '.join(_MNIST_LAYOUT)}")
        if arrays[key].shape[1:] != shape or arrays[key].dtype != np.uint8:
            raise DataError(
                f"{path}: {key}: expected uint8 of shape (N, {', '.join(map(str, shape))}), "
                f"got {arrays[key].dtype} {arrays[key].shape}"
            )
    return arrays


def load_dataset(spec: Spec, mnist_path: Optional[str | Path] = None) -> Dataset:
    """The spec's data set, shaped as the spec's input."""
    if isinstance(spec.data, HeightWeight):
        return height_weight(spec.data)
    return mnist(spec.data, find_mnist(mnist_path))


def mnist(cfg: Mnist, path: Path) -> Dataset:
    arrays = read_mnist_npz(path)
    shape = (784,) if cfg.flatten else (28, 28, 1)

    def images(key: str) -> np.ndarray:
        return arrays[key].reshape(-1, *shape).astype(np.float64) / 255.0

    subset = " (the subset shipped with aebench)" if path == bundled_mnist_path() else ""
    return Dataset(
        images("x_train"),
        arrays["y_train"].astype(np.int64),
        images("x_test"),
        arrays["y_test"].astype(np.int64),
        f"mnist {path}{subset}",
    )


def height_weight(cfg: HeightWeight) -> Dataset:
    """Seed 000's heights (cm) and weights (kg): weight = height - 105 plus a little scatter.

    Heights ~ N(175, 12), scatter ~ N(0, 3), from ``cfg.seed``; standardised with the
    training split's mean and standard deviation.
    """
    rng = np.random.default_rng(cfg.seed)
    height = rng.normal(175.0, 12.0, cfg.n_train + cfg.n_test)
    weight = height - 105.0 + rng.normal(0.0, 3.0, height.shape)
    table = np.stack([height, weight], axis=1)
    train, test = table[: cfg.n_train], table[cfg.n_train :]
    mean, sd = train.mean(axis=0), train.std(axis=0)
    return Dataset(
        (train - mean) / sd,
        None,
        (test - mean) / sd,
        None,
        f"height_weight seed {cfg.seed} (standardised: mean {mean.round(2).tolist()}, sd {sd.round(2).tolist()})",
    )


def one_hot(labels: Optional[np.ndarray], num_classes: int) -> Optional[np.ndarray]:
    return None if labels is None else np.eye(num_classes)[labels]


def fetch_mnist(dest: Optional[Path] = None, url: str = MNIST_URL, timeout: float = 10.0) -> Path:
    """Download MNIST to ``dest`` (default: the Keras cache), checking its sha256.

    Fails within ``timeout`` seconds with a DataError that says where to put the file.
    """
    dest = Path(dest) if dest else keras_cache_path()
    advice = (
        f"put a Keras-layout mnist.npz (sha256 {MNIST_SHA256[:12]}...) at {keras_cache_path()}, "
        f"or pass --data PATH, or set {MNIST_ENV}"
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - fixed https URL
            payload = response.read()
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"could not download MNIST from {url} ({reason}); {advice}") from None
    digest = hashlib.sha256(payload).hexdigest()
    if digest != MNIST_SHA256:
        raise DataError(f"download from {url} has sha256 {digest}, expected {MNIST_SHA256}; {advice}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        tmp.write(payload)
    os.replace(tmp.name, dest)
    return dest
