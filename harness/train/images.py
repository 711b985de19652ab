"""PNG figures of a trained model: reconstructions, prior samples, latent interpolations,
denoising triplets, code activations, the 2-D latent space and loss curves.

Images are encoded and decoded by the backend; everything else (corrupting the shown
inputs, drawing the prior samples, choosing the pairs to interpolate, tiling) is NumPy, so
every backend is shown the same inputs. Every title names the spec, the backend and the
epochs trained (run_heading), and tables are plotted against their feature names. Images of
1 channel are shown in grayscale, of 3 in RGB, clipped to [0, 1] (image_shape).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from aebench.categorical import prior_codes  # noqa: E402
from aebench.data.datasets import Dataset, one_hot  # noqa: E402
from aebench.data.noise import (  # noqa: E402
    PRIOR_STREAM,
    TEST_STREAM,
    corrupt,  # noqa: E402
    draw_noise,
    stream,
)
from aebench.losses import code_targets, term_figures  # noqa: E402
from aebench.losses._quantizers import code_count, decoder_picks, perplexity, quantizers, usage  # noqa: E402
from aebench.plugins.backend_api import Backend  # noqa: E402
from aebench.spec.shapes import ModelPlan  # noqa: E402
from aebench.spec.types import Spec  # noqa: E402
from aebench.train.quality import latent_point, per_image_psnr  # noqa: E402

SHOWN = 10
CATEGORIES_STREAM_KEY = 1  # stream(seed, PRIOR_STREAM, 1): the other variables of categories.png
SHOWN_POINTS = 256  # tabular specs are shown as scatter plots of this many test rows


SCATTER_POINTS = 2000  # test examples shown in the latent scatter and code histograms
INTERPOLATION_STEPS = 8  # decoded points between (and including) the two ends
INTERPOLATION_PAIRS = 4
TRIPLETS = 8
TITLE_FONTSIZE = 9
_CHAR_WIDTH_EM = 0.62  # a generous average character width of matplotlib's default font, in ems


def run_heading(spec_name: str, backend_name: str, epochs: int) -> str:
    """The first line of every training figure's title, e.g. 'vae_dense on torch, after 5 epochs'."""
    return f"{spec_name} on {backend_name}, after {epochs} epoch{'' if epochs == 1 else 's'}"


def write_figures(backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, out: Path) -> list[Path]:
    """Writes the figures of training_figures into ``out``, each as it is drawn; returns the files written."""
    return [_save(fig, out / name) for name, fig in training_figures(backend, model, spec, plan, data)]


def training_figures(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset
) -> Iterator[tuple[str, Figure]]:
    """The figures of a model trained for spec.train.epochs on ``backend``, as (file name, figure):

    reconstructions.png always; samples.png (family vae and categorical: decoded draws of the
    prior); categories.png (family categorical: each category of the first variable decoded
    with the other variables drawn from the prior); interpolation.png (decoded straight
    lines between the latent points of test pairs; the one-hot label is interpolated too for
    conditional specs); denoising.png (specs with corruption: clean, corrupted, restored, with
    each image's PSNR); code_activations.png (specs with a term
    that sets a code target, as sparsity does); code_usage.png (specs whose decoder picks
    codes, as a vector quantizer does: test images, their reconstructions and how often each
    code is picked over the test split); latent_scatter.png (latent size 2, family vae or ae:
    posterior means or codes of the test split, coloured by label); and the figures the loss
    terms ask for (TERM_FIGURES, LossTerm.figures): samples.png also for a deterministic code
    pulled toward the prior, codes_against_prior.png, latent_traversals.png.
    Each title is run_heading (spec, backend, epochs) over what the figure shows; tabular
    data is plotted against its feature names (Dataset.feature_names).
    """
    heading = run_heading(spec.name, backend.name, spec.train.epochs)
    shown = SHOWN if image_shape(plan) else SHOWN_POINTS
    x = data.x_test[:shown]
    labels = _labels(spec, data.y_test[:shown] if data.y_test is not None else None)
    noise = draw_noise(spec, plan, len(x), stream(spec.train.seed, TEST_STREAM, 99), training=False)
    shown_input = corrupt(spec.corruption, x, noise.corruption)
    restored = backend.decode(model, latent_point(spec, backend.encode(model, shown_input, labels)), labels)
    rows = {"input": x, "corrupted": shown_input, "reconstructed": restored}
    if spec.corruption is None:
        rows.pop("corrupted")
    yield "reconstructions.png", reconstructions_figure(rows, plan, heading, data.feature_names)
    asked = term_figures(spec.loss)
    if spec.model.generative or "samples" in asked:
        z = prior_samples(spec, plan, SHOWN * SHOWN, stream(spec.train.seed, PRIOR_STREAM))
        sample_labels = _labels(spec, np.repeat(np.arange(SHOWN) % 10, SHOWN)) if spec.model.conditional else None
        samples = backend.decode(model, z, sample_labels)
        yield "samples.png", samples_figure(samples, plan, spec, heading, data.feature_names)
    if spec.model.family == "categorical":
        yield "categories.png", categories_figure(backend, model, spec, plan, heading, data.feature_names)
    yield "interpolation.png", interpolation_figure(backend, model, spec, plan, data, heading)
    if spec.corruption is not None:
        yield "denoising.png", denoising_figure(rows, plan, heading, data.feature_names)
    target = next(iter(code_targets(spec.loss).values()), None)
    if target is not None:
        yield "code_activations.png", code_activations_figure(backend, model, spec, data, heading, target)
    if quantizers(plan.decoder):
        yield "code_usage.png", code_usage_figure(backend, model, spec, plan, data, rows, heading)
    if plan.latent_size == 2 and spec.model.family != "categorical":  # one-hot codes have no scatter
        yield "latent_scatter.png", latent_scatter_figure(backend, model, spec, data, heading)
    if "codes_against_prior" in asked:
        yield "codes_against_prior.png", codes_against_prior_figure(backend, model, spec, data, heading)
    if "latent_traversals" in asked and image_shape(plan) is not None:
        yield "latent_traversals.png", latent_traversals_figure(backend, model, spec, plan, data, heading)


TERM_FIGURES = frozenset({"samples", "codes_against_prior", "latent_traversals"})
"""The figures a loss term may ask for (LossTerm.figures), beyond every spec's own."""
PRIOR_PANELS = 8  # latent dimensions shown against the prior
TRAVERSAL_DIMS, TRAVERSAL_STEPS, TRAVERSAL_RANGE = 10, 9, 3.0


def codes_against_prior_figure(backend: Backend, model: object, spec: Spec, data: Dataset, heading: str) -> Figure:
    """Histograms of the test split's codes (posterior means for family vae), one panel per
    latent dimension (the first PRIOR_PANELS), each against the prior's N(0, 1) density."""
    x = data.x_test[:SCATTER_POINTS]
    z = np.asarray(latent_point(spec, backend.encode(model, x, _labels(spec, _first(data.y_test, len(x))))), np.float64)
    dims = min(PRIOR_PANELS, z.shape[1])
    fig, axes = plt.subplots(1, dims, figsize=(1.9 * dims + 0.6, 2.4), squeeze=False)
    grid = np.linspace(-4.0, 4.0, 161)
    for d, ax in enumerate(axes[0]):
        ax.hist(z[:, d], bins=40, range=(-4.0, 4.0), density=True, color="tab:blue", alpha=0.7, label="codes")
        ax.plot(grid, np.exp(-0.5 * grid**2) / np.sqrt(2.0 * np.pi), color="black", label="N(0, 1)")
        ax.set_title(f"z[{d}]", fontsize=8)
        ax.tick_params(labelsize=6)
    axes[0][0].legend(fontsize=6)
    what = "posterior means" if spec.model.family == "vae" else "codes"
    return _titled(fig, heading, f"{what} of {len(x)} test examples per dimension against the prior N(0, 1)")


def latent_traversals_figure(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, heading: str
) -> Figure:
    """One row per latent dimension (the first TRAVERSAL_DIMS): the first test example's latent
    point with that dimension swept over [-3, 3], decoded (the view of a disentangled code)."""
    x = data.x_test[:1]
    labels = _labels(spec, _first(data.y_test, 1))
    start = np.asarray(latent_point(spec, backend.encode(model, x, labels)), np.float64)[0]
    dims = min(TRAVERSAL_DIMS, len(start))
    values = np.linspace(-TRAVERSAL_RANGE, TRAVERSAL_RANGE, TRAVERSAL_STEPS)
    z = np.repeat(start[None], dims * TRAVERSAL_STEPS, axis=0)
    for d in range(dims):
        z[d * TRAVERSAL_STEPS : (d + 1) * TRAVERSAL_STEPS, d] = values
    path_labels = None if labels is None else np.repeat(labels, len(z), axis=0)
    decoded = np.asarray(backend.decode(model, z, path_labels))
    shape = image_shape(plan)
    assert shape is not None, "traversals are drawn for image specs"
    fig, ax = plt.subplots(figsize=(TRAVERSAL_STEPS * 0.8, dims * 0.85 + 0.6))
    _show(ax, _tile(decoded.reshape(-1, *shape), cols=TRAVERSAL_STEPS))
    what = f"one row per latent dimension z[0..{dims - 1}], swept from -3 to 3 around the first test image's"
    return _titled(fig, heading, what + " point")


def prior_samples(spec: Spec, plan: ModelPlan, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` draws of the prior over z: N(0, I) (family vae), one uniform category per variable,
    one-hot (family categorical: aebench.categorical.prior_codes)."""
    latent = spec.model.latent
    if spec.model.family == "categorical":
        assert latent.categories is not None, "family categorical has categories"
        return prior_codes(rng, n, latent.variables, latent.categories)
    return rng.standard_normal((n, plan.latent_size))


def prior_description(spec: Spec) -> str:
    """What samples.png decodes, for its title."""
    if spec.model.family == "categorical":
        latent = spec.model.latent
        return f"decoded z ~ Uniform: one of {latent.categories} categories for each of {latent.variables} variables"
    return "decoded z ~ N(0, I)"


def categories_figure(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, heading: str, names: tuple[str, ...]
) -> Figure:
    """Family categorical: column k decodes the first variable's category k, each row the same
    draw of the other variables from the uniform prior (and, conditional specs, one label per
    row): what the first variable alone changes."""
    categories = spec.model.latent.categories
    assert categories is not None, "family categorical has categories"
    others = prior_samples(spec, plan, SHOWN, stream(spec.train.seed, PRIOR_STREAM, CATEGORIES_STREAM_KEY))
    z = np.repeat(others, categories, axis=0)
    z[:, :categories] = np.tile(np.eye(categories), (SHOWN, 1))
    row_labels = _labels(spec, np.repeat(np.arange(SHOWN) % 10, categories)) if spec.model.conditional else None
    decoded = backend.decode(model, z, row_labels)
    what = f"the first variable's {categories} categories (columns), the other variables drawn from the prior (rows)"
    shape = image_shape(plan)
    if shape is None:
        series = {f"category {k}": decoded[k::categories] for k in range(categories)}
        return _scatter(series, heading, what, names)
    fig, ax = plt.subplots(figsize=(max(categories, 4) * 0.7, SHOWN * 0.7 + 0.8))
    _show(ax, _tile(decoded.reshape(-1, *shape), cols=categories))
    return _titled(fig, heading, what)


def interpolation_figure(
    backend: Backend, model: object, spec: Spec, plan: ModelPlan, data: Dataset, heading: str
) -> Figure:
    """Decoded straight lines in latent space between test pairs (examples 2i and 2i+1)."""
    x = data.x_test[: 2 * INTERPOLATION_PAIRS]
    labels = _labels(spec, data.y_test[: len(x)] if data.y_test is not None else None)
    ends = latent_point(spec, backend.encode(model, x, labels))
    t = np.linspace(0.0, 1.0, INTERPOLATION_STEPS)[None, :, None]
    start, stop = ends[0::2, None, :], ends[1::2, None, :]
    z = (start + t * (stop - start)).reshape(-1, ends.shape[1])
    path_labels = None
    if labels is not None:
        path_labels = labels[0::2, None, :] + t * (labels[1::2, None, :] - labels[0::2, None, :])
        path_labels = path_labels.reshape(-1, labels.shape[1])
    decoded = backend.decode(model, z, path_labels).reshape(len(start), INTERPOLATION_STEPS, -1)
    what = "decoded straight lines between the latent points of test pairs"
    shape = image_shape(plan)
    if shape is None:
        return _path_scatter(data.x_test[:SHOWN_POINTS], decoded, x, heading, what, data.feature_names)
    strips = [
        np.concatenate([x[2 * i : 2 * i + 1].reshape(1, -1), decoded[i], x[2 * i + 1 : 2 * i + 2].reshape(1, -1)])
        for i in range(len(start))
    ]
    canvas = _tile(np.concatenate(strips).reshape(-1, *shape), cols=INTERPOLATION_STEPS + 2)
    fig, ax = plt.subplots(figsize=((INTERPOLATION_STEPS + 2) * 0.9, len(strips) * 0.95 + 0.6))
    _show(ax, canvas)
    return _titled(fig, heading, what + " (first and last column: the test images)")


def _path_scatter(
    points: np.ndarray, paths: np.ndarray, ends: np.ndarray, heading: str, what: str, names: tuple[str, ...]
) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(points[:, 0], points[:, 1], s=8, color="0.75", label="test examples")
    for i, line in enumerate(paths):
        ax.plot(line[:, 0], line[:, 1], marker="o", markersize=3, label=f"pair {i + 1}")
    pair_ends = ends[: 2 * len(paths)]
    ax.scatter(pair_ends[:, 0], pair_ends[:, 1], marker="x", color="black", label="each pair's two test examples")
    _feature_axes(ax, names)
    ax.legend(fontsize=7)
    return _titled(fig, heading, what)


def denoising_figure(rows: dict[str, np.ndarray], plan: ModelPlan, heading: str, names: tuple[str, ...]) -> Figure:
    """(clean, corrupted, restored) triplets with the PSNR of the corrupted and restored images."""
    clean, corrupted, restored = (rows[k][:TRIPLETS] for k in ("input", "corrupted", "reconstructed"))
    shape = image_shape(plan)
    if shape is None:
        series = {"clean": clean, "corrupted": corrupted, "restored": restored}
        return _scatter(series, heading, "denoising: clean, corrupted, restored", names)
    psnr_in, psnr_out = per_image_psnr(clean, corrupted), per_image_psnr(clean, restored)
    cols = 2
    fig, axes = plt.subplots(-(-len(clean) // cols), cols, figsize=(cols * 3.2, -(-len(clean) // cols) * 1.35))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < len(clean):
            triplet = np.stack([clean[i], corrupted[i], restored[i]]).reshape(-1, *shape)
            _show(ax, _tile(triplet, cols=3))
            ax.set_title(f"PSNR {psnr_in[i]:.1f} -> {psnr_out[i]:.1f} dB", fontsize=7)
    return _titled(fig, heading, "clean, corrupted, restored")


def code_activations_figure(
    backend: Backend, model: object, spec: Spec, data: Dataset, heading: str, target: float
) -> Figure:
    """Histogram of every code activation, and each unit's mean activation against the target
    a loss term pulls it toward (the sparsity term's rho)."""
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
    right.axhline(target, color="black", linestyle="--", label=f"target rho {target}")
    right.set_xlabel("unit (sorted)")
    right.set_ylabel("mean activation")
    right.set_title("each unit's mean activation (rho_hat)", fontsize=8)
    right.legend(fontsize=7)
    return _titled(fig, heading, "code activations")


def code_usage_figure(
    backend: Backend,
    model: object,
    spec: Spec,
    plan: ModelPlan,
    data: Dataset,
    rows: dict[str, np.ndarray],
    heading: str,
) -> Figure:
    """The shown test examples and their reconstructions over one panel per quantizer of the
    decoder: how many of the test split's vectors pick each code (codes sorted by use), with the
    usage's perplexity and the number of codes used (the commitment term's quality metrics). The
    codes are picked by the decoder run in NumPy on the backend's encodings and weights."""
    x = data.x_test[:SCATTER_POINTS]
    labels = _labels(spec, _first(data.y_test, len(x)))
    code = np.asarray(latent_point(spec, backend.encode(model, x, labels)), np.float64)
    weights = {k: np.asarray(v, np.float64) for k, v in backend.get_weights(model).items()}
    picks = decoder_picks(plan, weights, code, labels)
    layers = {layer.name: layer for layer in quantizers(plan.decoder)}
    shown = {k: rows[k] for k in ("input", "reconstructed")}
    shape = image_shape(plan)
    fig = plt.figure(figsize=(SHOWN * 0.9, 2.4 + 2.6 * len(picks)))
    grid = fig.add_gridspec(2 + len(picks), 1, height_ratios=[1, 1] + [2.4] * len(picks))
    for i, (title, images) in enumerate(shown.items()):
        ax = fig.add_subplot(grid[i])
        if shape is None:
            ax.plot(images.T, linewidth=0.8)
        else:
            _show(ax, _tile(images.reshape(-1, *shape), cols=len(images)))
        ax.set_title(title, fontsize=8, loc="left")
    for i, (name, indices) in enumerate(picks.items()):
        codes = code_count(layers[name])
        counts = usage(indices, codes)
        ax = fig.add_subplot(grid[2 + i])
        ax.bar(np.arange(codes), np.sort(counts)[::-1], width=1.0, color="tab:blue")
        ax.set_xlim(-0.5, codes - 0.5)
        ax.set_xlabel("code (sorted by use)")
        ax.set_ylabel("vectors")
        ax.set_title(
            f"{name}: {len(indices)} vectors of {len(x)} test examples; perplexity {perplexity(counts):.1f}, "
            f"{int((counts > 0).sum())} of {codes} codes used",
            fontsize=8,
            loc="left",
        )
    return _titled(fig, heading, "test images, their reconstructions and the codes they pick")


def latent_scatter_figure(backend: Backend, model: object, spec: Spec, data: Dataset, heading: str) -> Figure:
    """The 2-D posterior means (or codes) of the test split, coloured by label where there is one."""
    x = data.x_test[:SCATTER_POINTS]
    y = _first(data.y_test, len(x))
    z = np.asarray(latent_point(spec, backend.encode(model, x, _labels(spec, y))), np.float64)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    if y is None:
        ax.scatter(z[:, 0], z[:, 1], s=6, alpha=0.7)
    else:
        points = ax.scatter(z[:, 0], z[:, 1], c=y, cmap="tab10", vmin=-0.5, vmax=9.5, s=6, alpha=0.8)
        fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel("z[0]")
    ax.set_ylabel("z[1]")
    what = "posterior means" if spec.model.family == "vae" else "codes"
    return _titled(fig, heading, f"{what} of {len(x)} test examples")


def write_loss_curves(rows: list[dict], terms: tuple[str, ...], path: Path, heading: str) -> Path:
    """loss_curves_figure saved to ``path``."""
    return _save(loss_curves_figure(rows, terms, heading), path)


def loss_curves_figure(rows: list[dict], terms: tuple[str, ...], heading: str) -> Figure:
    """One panel per loss term: the train mean per epoch and the test value after each epoch
    (epoch 0: the untrained model), from train's metric rows; titled ``heading`` (run_heading)."""
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
    return _titled(fig, heading, "loss per epoch")


def _first(y: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
    return None if y is None else y[:n]


def _labels(spec: Spec, y: Optional[np.ndarray]) -> Optional[np.ndarray]:
    return one_hot(y, spec.model.conditioning.num_classes) if spec.model.conditional else None


def image_shape(plan: ModelPlan) -> Optional[tuple[int, int, int]]:
    """(H, W, C) the spec's examples are shown as: images of 1 channel (grayscale) or 3 (RGB) as
    they are, MNIST's flat 784 values as 28x28x1; None for a table or other flat features, which
    are shown as scatter plots of their first two features."""
    shape = tuple(plan.data_shape)
    if len(shape) == 3 and shape[2] in (1, 3):
        return shape[0], shape[1], shape[2]
    return (28, 28, 1) if shape == (784,) else None


def reconstructions_figure(
    rows: dict[str, np.ndarray], plan: ModelPlan, heading: str, names: tuple[str, ...]
) -> Figure:
    """The shown test examples (corrupted ones too, where the spec corrupts) and their reconstructions."""
    shape = image_shape(plan)
    if shape is None:
        return _scatter(rows, heading, "test examples and reconstructions", names)
    fig, axes = plt.subplots(len(rows), 1, figsize=(SHOWN * 0.9, len(rows) * 1.1))
    for ax, (title, images) in zip(np.atleast_1d(axes), rows.items()):
        _show(ax, _tile(images.reshape(-1, *shape), cols=len(images)))
        ax.set_title(title, fontsize=8, loc="left")
    return _titled(fig, heading, "test images and their reconstructions")


def samples_figure(samples: np.ndarray, plan: ModelPlan, spec: Spec, heading: str, names: tuple[str, ...]) -> Figure:
    """Decoded draws from the prior (prior_samples); one label per row for conditional specs."""
    shape = image_shape(plan)
    what = prior_description(spec)
    if shape is None:
        return _scatter({"prior samples": samples}, heading, what, names)
    fig, ax = plt.subplots(figsize=(6, 6))
    _show(ax, _tile(samples.reshape(-1, *shape), cols=SHOWN))
    return _titled(fig, heading, what + (", one label per row" if spec.model.conditional else ""))


def _scatter(series: dict[str, np.ndarray], heading: str, what: str, names: tuple[str, ...]) -> Figure:
    fig, ax = plt.subplots(figsize=(5, 5))
    for label, points in series.items():
        ax.scatter(points[:, 0], points[:, 1], s=12, label=label, alpha=0.7)
    _feature_axes(ax, names)
    ax.legend(fontsize=8)
    return _titled(fig, heading, what)


def _feature_axes(ax: Axes, names: tuple[str, ...]) -> None:
    """Axis labels of a scatter of a table's first two columns: the data set's feature names."""
    x_name, y_name = names[:2] if len(names) >= 2 else ("feature 0", "feature 1")
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)


def _titled(fig: Figure, heading: str, what: str) -> Figure:
    """``fig`` titled with the run heading over what it shows, each line wrapped to the
    figure's width so that nothing is clipped, and laid out."""
    chars = int(fig.get_figwidth() * 72 / (TITLE_FONTSIZE * _CHAR_WIDTH_EM))
    fig.suptitle("\n".join(textwrap.fill(line, chars) for line in (heading, what)), fontsize=TITLE_FONTSIZE)
    fig.tight_layout()
    return fig


def _tile(images: np.ndarray, cols: int) -> np.ndarray:
    """(N, H, W, C) images clipped to [0, 1] on one white canvas, ``cols`` to a row, 2 pixels apart."""
    rows = -(-len(images) // cols)
    h, w, channels = images.shape[1:]
    canvas = np.ones((rows * (h + 2), cols * (w + 2), channels))
    for i, image in enumerate(np.clip(images, 0, 1)):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = image
    return canvas


def _show(ax: Axes, canvas: np.ndarray) -> None:
    """A tiled canvas without axes: grayscale on [0, 1] for 1 channel, RGB for 3."""
    if canvas.shape[2] == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(canvas)
    ax.axis("off")


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
