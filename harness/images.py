"""PNG figures of a trained model: reconstructions and prior samples.

Images are decoded by the backend; everything else (corrupting the shown inputs, drawing
the prior samples, tiling) is NumPy, so every backend is shown the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .backend_api import Backend  # noqa: E402
from .data import Dataset, one_hot  # noqa: E402
from .noise import PRIOR_STREAM, TEST_STREAM, draw_noise, stream  # noqa: E402
from .oracle import corrupt  # noqa: E402
from .shapes import ModelPlan  # noqa: E402
from .spec import Spec  # noqa: E402

SHOWN = 10
SHOWN_POINTS = 256  # tabular specs are shown as scatter plots of this many test rows


def write_figures(backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, out: Path) -> list[Path]:
    """reconstructions.png always; samples.png for family vae. Returns the files written."""
    shown = SHOWN if _is_image(plan) else SHOWN_POINTS
    x = data.x_test[:shown]
    labels = _labels(spec, data.y_test[:shown] if data.y_test is not None else None)
    noise = draw_noise(spec, plan, len(x), stream(spec.train.seed, TEST_STREAM, 99))
    shown_input = corrupt(spec.corruption, x, noise.corruption)
    restored = backend.decode(model, _latent(backend.encode(model, shown_input, labels)), labels)
    rows = {"input": x, "corrupted": shown_input, "reconstruction": restored}
    if spec.corruption is None:
        rows.pop("corrupted")
    written = [_figure(rows, plan, out / "reconstructions.png", spec)]
    if spec.model.family == "vae":
        z = stream(spec.train.seed, PRIOR_STREAM).standard_normal((SHOWN * SHOWN, plan.latent_size))
        sample_labels = _labels(spec, np.repeat(np.arange(SHOWN) % 10, SHOWN)) if spec.model.conditional else None
        samples = backend.decode(model, z, sample_labels)
        written.append(_samples_figure(samples, plan, out / "samples.png", spec))
    return written


def _labels(spec: Spec, y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return one_hot(y, spec.model.conditioning.num_classes) if spec.model.conditional else None


def _latent(encoded: dict[str, np.ndarray]) -> np.ndarray:
    """The point a reconstruction is decoded from: the posterior mean, or the code."""
    return encoded.get("mean", encoded.get("code"))


def _is_image(plan: ModelPlan) -> bool:
    return int(np.prod(plan.data_shape)) == 784


def _figure(rows: dict[str, np.ndarray], plan: ModelPlan, path: Path, spec: Spec) -> Path:
    if not _is_image(plan):
        return _scatter(rows, path, f"{spec.name}: test examples and reconstructions")
    fig, axes = plt.subplots(len(rows), 1, figsize=(SHOWN * 0.9, len(rows) * 1.1))
    for ax, (title, images) in zip(np.atleast_1d(axes), rows.items()):
        ax.imshow(_tile(images.reshape(-1, 28, 28), cols=len(images)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8, loc="left")
        ax.axis("off")
    fig.suptitle(spec.name, fontsize=9)
    return _save(fig, path)


def _samples_figure(samples: np.ndarray, plan: ModelPlan, path: Path, spec: Spec) -> Path:
    if not _is_image(plan):
        return _scatter({"prior samples": samples}, path, f"{spec.name}: decoded prior samples")
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(_tile(samples.reshape(-1, 28, 28), cols=SHOWN), cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"{spec.name}: decoded z ~ N(0, I)" + (", one label per row" if spec.model.conditional else ""),
                 fontsize=9)
    ax.axis("off")
    return _save(fig, path)


def _scatter(series: dict[str, np.ndarray], path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, points in series.items():
        ax.scatter(points[:, 0], points[:, 1], s=12, label=label, alpha=0.7)
    ax.set_xlabel("feature 0 (standardised)")
    ax.set_ylabel("feature 1 (standardised)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _tile(images: np.ndarray, cols: int) -> np.ndarray:
    rows = -(-len(images) // cols)
    h, w = images.shape[1:]
    canvas = np.ones((rows * (h + 2), cols * (w + 2)))
    for i, image in enumerate(np.clip(images, 0, 1)):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) + 1: r * (h + 2) + 1 + h, c * (w + 2) + 1: c * (w + 2) + 1 + w] = image
    return canvas


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
