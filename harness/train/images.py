"""PNG figures of a trained model: reconstructions, prior samples, latent interpolations,
denoising triplets, code activations, the 2-D latent space and loss curves.

Images are encoded and decoded by the backend; everything else (corrupting the shown
inputs, drawing the prior samples, choosing the pairs to interpolate, tiling) is NumPy, so
every backend is shown the same inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from aebench.check.oracle import corrupt  # noqa: E402
from aebench.data.datasets import Dataset, one_hot  # noqa: E402
from aebench.data.noise import PRIOR_STREAM, TEST_STREAM, draw_noise, stream  # noqa: E402
from aebench.plugins.backend_api import Backend  # noqa: E402
from aebench.spec.shapes import ModelPlan  # noqa: E402
from aebench.spec.types import Spec  # noqa: E402
from aebench.train.quality import per_image_psnr  # noqa: E402

SHOWN = 10
SHOWN_POINTS = 256  # tabular specs are shown as scatter plots of this many test rows


SCATTER_POINTS = 2000  # test examples shown in the latent scatter and code histograms
INTERPOLATION_STEPS = 8  # decoded points between (and including) the two ends
INTERPOLATION_PAIRS = 4
TRIPLETS = 8


def write_figures(backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, out: Path) -> list[Path]:
    """Writes into ``out`` and returns the files written:

    reconstructions.png always; samples.png (family vae); interpolation.png (decoded straight
    lines between the latent points of test pairs; the one-hot label is interpolated too for
    conditional specs); denoising.png (specs with corruption: clean, corrupted, restored, with
    each image's PSNR); code_activations.png (specs with a sparsity term); latent_scatter.png
    (latent size 2: posterior means or codes of the test split, coloured by label).
    """
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
    written.append(interpolation_figure(backend, model, spec, plan, data, out / "interpolation.png"))
    if spec.corruption is not None:
        written.append(denoising_figure(rows, plan, out / "denoising.png", spec))
    if spec.loss.sparsity is not None:
        written.append(code_activations_figure(backend, model, spec, data, out / "code_activations.png"))
    if plan.latent_size == 2:
        written.append(latent_scatter_figure(backend, model, spec, data, out / "latent_scatter.png"))
    return written


def interpolation_figure(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, path: Path
) -> Path:
    """Decoded straight lines in latent space between test pairs (examples 2i and 2i+1)."""
    x = data.x_test[: 2 * INTERPOLATION_PAIRS]
    labels = _labels(spec, data.y_test[: len(x)] if data.y_test is not None else None)
    ends = _latent(backend.encode(model, x, labels))
    t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
    start, stop = ends[0::2, None, :], ends[1::2, None, :]
    z = (start + t * (stop - start)).reshape(-1, ends.shape[1])
    path_labels = None
    if labels is not None:
        path_labels = labels[0::2, None, :] + t * (labels[1::2, None, :] - labels[0::2, None, :])
        path_labels = path_labels.reshape(-1, labels.shape[1])
    decoded = backend.decode(model, z, path_labels).reshape(len(start), INTERPOLATION_STEPS, -1)
    title = f"{spec.name}: decoded straight lines between the latent points of test pairs"
    if not _is_image(plan):
        return _path_scatter(data.x_test[:SHOWN_POINTS], decoded, x, path, title)
    strips = [
        np.concatenate([x[2 * i : 2 * i + 1].reshape(1, -1), decoded[i], x[2 * i + 1 : 2 * i + 2].reshape(1, -1)])
        for i in range(len(start))
    ]
    canvas = _tile(np.concatenate(strips).reshape(-1, 28, 28), cols=INTERPOLATION_STEPS + 2)
    fig, ax = plt.subplots(figsize=((INTERPOLATION_STEPS + 2) * 0.9, len(strips) * 0.95 + 0.6))
    ax.imshow(canvas, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title + "\n(first and last column: the test images)", fontsize=8)
    ax.axis("off")
    return _save(fig, path)


def _path_scatter(points: np.ndarray, paths: np.ndarray, ends: np.ndarray, path: Path, title: str) -> Path:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(points[:, 0], points[:, 1], s=8, color="0.75", label="test examples")
    for i, line in enumerate(paths):
        ax.plot(line[:, 0], line[:, 1], marker="o", markersize=3, label=f"pair {i + 1}")
        ax.scatter(ends[2 * i : 2 * i + 2, 0], ends[2 * i : 2 * i + 2, 1], marker="x", color="black")
    ax.set_xlabel("feature 0 (standardised)")
    ax.set_ylabel("feature 1 (standardised)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, path)


def denoising_figure(rows: dict[str, np.ndarray], plan: ModelPlan, path: Path, spec: Spec) -> Path:
    """(clean, corrupted, restored) triplets with the PSNR of the corrupted and restored images."""
    clean, corrupted, restored = (rows[k][:TRIPLETS] for k in ("input", "corrupted", "reconstruction"))
    if not _is_image(plan):
        return _scatter({"clean": clean, "corrupted": corrupted, "restored": restored}, path, f"{spec.name}: denoising")
    psnr_in, psnr_out = per_image_psnr(clean, corrupted), per_image_psnr(clean, restored)
    cols = 2
    fig, axes = plt.subplots(-(-len(clean) // cols), cols, figsize=(cols * 3.2, -(-len(clean) // cols) * 1.35))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(clean):
            triplet = np.stack([clean[i], corrupted[i], restored[i]]).reshape(-1, 28, 28)
            ax.imshow(_tile(triplet, cols=3), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"PSNR {psnr_in[i]:.1f} -> {psnr_out[i]:.1f} dB", fontsize=7)
    fig.suptitle(f"{spec.name}: clean, corrupted, restored", fontsize=9)
    return _save(fig, path)


def code_activations_figure(backend: Backend, model: object, spec: Spec, data: Dataset, path: Path) -> Path:
    """Histogram of every code activation, and each unit's mean activation against rho."""
    x = data.x_test[:SCATTER_POINTS]
    code = np.asarray(backend.encode(model, x, _labels(spec, _first(data.y_test, len(x))))["code"], np.float64)
    rho_hat = np.sort(code.mean(axis=0))[::-1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.hist(code.ravel(), bins=50, color="tab:blue")
    left.set_yscale("log")
    left.set_xlabel("code activation")
    left.set_ylabel("count (log)")
    left.set_title(f"all {code.shape[1]} units x {len(x)} test examples", fontsize=8)
    right.bar(np.arange(len(rho_hat)), rho_hat, color="tab:orange")
    right.axhline(spec.loss.sparsity.rho, color="black", linestyle="--", label=f"target rho {spec.loss.sparsity.rho}")
    right.set_xlabel("unit (sorted)")
    right.set_ylabel("mean activation")
    right.set_title("each unit's mean activation (rho_hat)", fontsize=8)
    right.legend(fontsize=7)
    fig.suptitle(f"{spec.name}: code activations", fontsize=9)
    return _save(fig, path)


def latent_scatter_figure(backend: Backend, model: object, spec: Spec, data: Dataset, path: Path) -> Path:
    """The 2-D posterior means (or codes) of the test split, coloured by label where there is one."""
    x = data.x_test[:SCATTER_POINTS]
    y = _first(data.y_test, len(x))
    z = np.asarray(_latent(backend.encode(model, x, _labels(spec, y))), np.float64)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    if y is None:
        ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.7)
    else:
        points = ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=6, alpha=0.8)
        fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    what = "posterior means" if spec.model.family == "vae" else "codes"
    ax.set_title(f"{spec.name}: {what} of {len(x)} test examples", fontsize=9)
    return _save(fig, path)


def write_loss_curves(rows: list[dict], terms: tuple[str, ...], path: Path, title: str = "") -> Path:
    """One panel per loss term: the train mean per epoch and the test value after each epoch
    (epoch 0: the untrained model), from train's metric rows."""
    fig, axes = plt.subplots(1, len(terms), figsize=(3.4 * len(terms), 3.2), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for split, style in (("train", "o-"), ("test", "s--")):
            points = [(r["epoch"], r[f"{split}_{term}"]) for r in rows if f"{split}_{term}" in r]
            if points:
                ax.plot(*zip(*points), style, markersize=3, label=split)
        ax.set_title(term, fontsize=9)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _first(y: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    return None if y is None else y[:n]


def _labels(spec: Spec, y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return one_hot(y, spec.model.conditioning.num_classes) if spec.model.conditional else None


def _latent(encoded: dict[str, np.ndarray]) -> np.ndarray:
    """The point a reconstruction is decoded from: the posterior mean, or the code."""
    return encoded["mean"] if "mean" in encoded else encoded["code"]


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
    ax.set_title(
        f"{spec.name}: decoded z ~ N(0, I)" + (", one label per row" if spec.model.conditional else ""), fontsize=9
    )
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
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = image
    return canvas


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
