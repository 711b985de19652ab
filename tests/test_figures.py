"""The training figures, drawn from small arrays without training or a framework: titles
name the spec, the backend and the epochs and fit in the figure, tables are plotted against
their feature names, every marker of the interpolation figure is in its legend, and the code-usage figure counts
the codes the decoder's quantizer picks."""

from __future__ import annotations

import dataclasses
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
from cases import suite_spec
from matplotlib.figure import Figure

from aebench.data.datasets import load_dataset
from aebench.plugins.canonical import init_weights
from aebench.spec.load import load_spec
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec
from aebench.train.images import INTERPOLATION_PAIRS, loss_curves_figure, run_heading, training_figures

BACKEND = "keras-torch"  # the longest shipped backend name: the widest title
EPOCHS = 7
# Together these draw every kind of figure: tabular (vae_toy), a 2-d latent scatter with
# labels (vae_conv), a conditional model (cvae), denoising under the longest spec name
# (denoising_ae_salt_pepper), code activations (sparse_ae), code usage (vq_vae), a categorical
# latent's categories (gumbel_vae) and the figures loss terms ask for (beta_tcvae: latent
# traversals; wae_mmd: samples and codes of a deterministic code against the prior).
SPECS = [
    "vae_toy",
    "vae_conv",
    "cvae",
    "denoising_ae_salt_pepper",
    "sparse_ae",
    "vq_vae",
    "gumbel_vae",
    "beta_tcvae",
    "wae_mmd",
]


class ArrayBackend:
    """Just enough of a Backend to draw the figures: encode keeps the first latent-size values
    of each example, decode repeats a latent point across the example's shape."""

    name = BACKEND

    def __init__(self, spec: Spec):
        self.spec, self.plan = spec, plan_model(spec)

    def encode(self, model: object, x: np.ndarray, labels) -> dict[str, np.ndarray]:
        flat = x.reshape(len(x), -1)
        z = np.tile(flat, (1, -(-self.plan.latent_size // flat.shape[1])))[:, : self.plan.latent_size]
        if self.spec.model.family == "vae":
            return {"mean": z, "log_var": np.zeros_like(z)}
        if self.spec.model.family == "categorical":
            return {"logits": z}
        return {"code": 1 / (1 + np.exp(-z))}

    def get_weights(self, model: object) -> dict[str, np.ndarray]:
        return init_weights(self.plan, self.spec.init.kernel, 0)

    def decode(self, model: object, z: np.ndarray, labels) -> np.ndarray:
        size = math.prod(self.plan.data_shape)
        out = np.tile(z, (1, -(-size // z.shape[1])))[:, :size]
        return out.reshape(len(z), *self.plan.data_shape)


def figures_of(spec_name: str) -> dict[str, Figure]:
    spec = suite_spec(spec_name)
    spec = spec.replace(train=dataclasses.replace(spec.train, epochs=EPOCHS))
    return dict(training_figures(ArrayBackend(spec), None, spec, plan_model(spec), load_dataset(spec)))


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def assert_nothing_clipped(name: str, fig: Figure) -> None:
    """Every artist, titles included, lies inside the figure once it is drawn."""
    fig.canvas.draw()
    box = fig.get_tightbbox(fig.canvas.get_renderer())
    width, height = fig.get_size_inches()
    slack = 0.02  # inches
    assert box.x0 >= -slack and box.y0 >= -slack, f"{name}: clipped at the left or bottom: {box.bounds}"
    assert box.x1 <= width + slack and box.y1 <= height + slack, f"{name}: clipped at the right or top: {box.bounds}"


@pytest.mark.parametrize("drawn", SPECS)
def test_every_training_figure_is_titled_with_spec_backend_and_epochs_and_fits(drawn: str) -> None:
    figures = figures_of(drawn)
    assert "interpolation.png" in figures and "reconstructions.png" in figures
    heading = f"{drawn} on {BACKEND}, after {EPOCHS} epochs"
    for name, fig in figures.items():
        assert heading in " ".join(fig.get_suptitle().split()), f"{name}: {fig.get_suptitle()!r}"
        assert_nothing_clipped(name, fig)


def test_loss_terms_get_the_figures_they_ask_for() -> None:
    assert {"latent_traversals.png", "codes_against_prior.png", "samples.png"} <= set(figures_of("beta_tcvae"))
    assert {"codes_against_prior.png", "samples.png"} <= set(figures_of("wae_mmd"))
    assert not {"codes_against_prior.png", "samples.png", "latent_traversals.png"} & set(figures_of("ae"))


def test_the_loss_curves_are_titled_with_spec_backend_and_epochs_and_fit() -> None:
    rows = [{"epoch": e, "test_total": 3.0 - e, "test_kl": 0.1 * e} for e in range(4)]
    rows[1:] = [{**r, "train_total": 3.2 - r["epoch"], "train_kl": 0.1} for r in rows[1:]]
    fig = loss_curves_figure(rows, ("total", "kl"), run_heading("denoising_ae_salt_pepper", BACKEND, 3))
    assert "denoising_ae_salt_pepper on keras-torch, after 3 epochs" in " ".join(fig.get_suptitle().split())
    assert_nothing_clipped("loss_curves.png", fig)
    assert run_heading("vae_dense", "torch", 1) == "vae_dense on torch, after 1 epoch"


def test_tabular_figures_are_plotted_against_the_data_sets_feature_names() -> None:
    names = load_dataset(load_spec("vae_toy")).feature_names
    assert names[0].startswith("height") and names[1].startswith("weight")
    for name, fig in figures_of("vae_toy").items():
        if name == "latent_scatter.png":
            continue  # latent coordinates, not features
        ax = fig.axes[0]
        assert (ax.get_xlabel(), ax.get_ylabel()) == names, name


def test_the_crosses_of_the_interpolation_figure_are_in_its_legend() -> None:
    ax = figures_of("vae_toy")["interpolation.png"].axes[0]
    ends = load_dataset(load_spec("vae_toy")).x_test[: 2 * INTERPOLATION_PAIRS]
    crosses = [c for c in ax.collections if np.array_equal(c.get_offsets(), ends)]
    assert len(crosses) == 1, "the pairs' test examples are drawn once, as one labelled set"
    label = crosses[0].get_label()
    assert "test examples" in label and not label.startswith("_")
    assert label in [t.get_text() for t in ax.get_legend().get_texts()]


def test_the_code_usage_figure_counts_every_test_vector_s_pick() -> None:
    """vq_vae's 16 vectors per test example each pick one of its codes (512 shipped, 128 at its
    test size): the bars add up to 16 x the examples shown, sorted by use, and the title states
    the usage's perplexity."""
    fig = figures_of("vq_vae")["code_usage.png"]
    bars = fig.axes[-1]
    heights = [patch.get_height() for patch in bars.patches]
    codes = next(layer.codes for layer in suite_spec("vq_vae").model.decoder if layer.type == "vector_quantizer")
    assert len(heights) == codes and heights == sorted(heights, reverse=True)
    examples = min(2000, len(load_dataset(load_spec("vq_vae")).x_test))
    assert sum(heights) == 16 * examples
    title = bars.get_title(loc="left")
    assert "perplexity" in title and f"of {codes} codes used" in title
