"""Training end to end on the bundled MNIST subset: every spec on the cheap backend, and the
specs of EVERY_BACKEND_TRAINS on every backend.

An epoch here is over the first 2,048 training and 512 test examples: 16 Adam steps at batch
128 lower the loss of every spec clearly, and an epoch of the whole subset (10,000 images)
took up to 80 s per spec on a 2-core CPU (jax vae_conv, beta_vae). README command 1 trains on
the whole subset."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
from cases import cheap_backend, suite_spec  # tests/ is on sys.path (pytest prepend import mode)

from aebench.data.datasets import Dataset, load_dataset
from aebench.errors import AebenchError
from aebench.losses import term_figures
from aebench.plugins.registry import load_backend
from aebench.progress import Progress
from aebench.scoring import QualitySettings
from aebench.train.loop import TrainingDiverged, train

TRAIN_EXAMPLES, TEST_EXAMPLES = 2048, 512


def one_epoch(spec_name: str):
    spec = suite_spec(spec_name)
    return spec.replace(train=dataclasses.replace(spec.train, epochs=1))


def first_examples(data: Dataset) -> Dataset:
    """The first TRAIN_EXAMPLES and TEST_EXAMPLES of a data set, labels alike."""

    def head(array: Optional[np.ndarray], n: int) -> Optional[np.ndarray]:
        return None if array is None else array[:n]

    return dataclasses.replace(
        data,
        x_train=data.x_train[:TRAIN_EXAMPLES],
        y_train=head(data.y_train, TRAIN_EXAMPLES),
        x_test=data.x_test[:TEST_EXAMPLES],
        y_test=head(data.y_test, TEST_EXAMPLES),
    )


EVERY_BACKEND_TRAINS = ("ae", "cvae", "vae_conv_bn64")
"""The specs every backend trains here: a plain autoencoder (no sampling), a conditional VAE
(labels through the loop and the figures) and the 64x64 RGB VAE with batch_norm (running
statistics in evaluation). Every other spec trains on the cheap backend only: each backend's
gradients are held to the oracle on every spec, and its trainer to the reference Adam and to the
other backends' trajectories on the specs that cover every part (test_backend_contract.py,
test_equivalence.py), so what an epoch adds is the loop's own work (data, evaluation, figures),
which the spec decides."""


def assert_one_epoch_lowers_the_test_loss(spec_name: str, backend, out: Path) -> None:
    spec = one_epoch(spec_name)
    rows = train(spec, backend, first_examples(load_dataset(spec)), out)
    before, after = rows[0]["test_total"], rows[1]["test_total"]
    assert np.isfinite(after) and after < before, (before, after)
    assert rows[1]["train_total"] < before
    written = {p.name for p in out.iterdir()}
    assert {"metrics.csv", "metrics.json", "spec.yaml", "reconstructions.png"} <= written
    assert ("samples.png" in written) == (spec.model.generative or "samples" in term_figures(spec.loss))
    assert ("categories.png" in written) == (spec.model.family == "categorical")
    meta = json.loads((out / "metrics.json").read_text())
    assert meta["backend"] == backend.name and len(meta["epochs"]) == 2
    assert "subset shipped with aebench" in meta["data"] or spec.data.name != "mnist"


@pytest.mark.slow
def test_one_epoch_of_every_spec_lowers_the_test_loss(spec_name: str, tmp_path: Path) -> None:
    assert_one_epoch_lowers_the_test_loss(spec_name, load_backend(cheap_backend()), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("trained", EVERY_BACKEND_TRAINS)
def test_one_epoch_on_every_backend_lowers_the_test_loss(backend, trained: str, tmp_path: Path) -> None:
    assert_one_epoch_lowers_the_test_loss(trained, backend, tmp_path)


def test_a_diverged_run_keeps_the_epochs_before(backend, tmp_path: Path) -> None:
    spec = one_epoch("vae_toy")
    spec = spec.replace(
        train=dataclasses.replace(spec.train, epochs=2),
        optimizer=dataclasses.replace(spec.optimizer, learning_rate=1e30),
    )
    with pytest.raises(TrainingDiverged) as info:
        train(spec, backend, load_dataset(spec), tmp_path)
    assert "loss is" in str(info.value)
    rows = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
    assert rows and rows[0]["epoch"] == 0
    assert (tmp_path / "metrics.csv").read_text().startswith("epoch,seconds,train_total")


def test_a_batch_larger_than_the_data_is_an_error(backend, tmp_path: Path) -> None:
    spec = one_epoch("vae_toy")
    spec = spec.replace(train=dataclasses.replace(spec.train, batch_size=100_000))
    with pytest.raises(AebenchError, match="train.batch_size: 100000 is larger than the 1024 training examples"):
        train(spec, backend, load_dataset(spec), tmp_path)


def test_the_loop_reports_each_row_then_the_scoring_to_its_listener(tmp_path: Path) -> None:
    """The TrainingListener contract: each row once it is written, then scoring's params before
    the quality step and its metrics after quality.json is written; a progress line for each."""
    spec = one_epoch("vae_toy")
    heard: list[tuple[str, object]] = []

    class Listener:
        def epoch(self, row: dict) -> None:
            written = json.loads((tmp_path / "metrics.json").read_text())["epochs"]
            assert written[-1] == row
            heard.append(("epoch", row["epoch"]))

        def scoring(self, params: dict[str, str]) -> None:
            assert not (tmp_path / "quality.json").exists()
            heard.append(("scoring", params))

        def scored(self, metrics: dict[str, float]) -> None:
            assert json.loads((tmp_path / "quality.json").read_text()) == metrics
            heard.append(("scored", sorted(metrics)))

    stream = io.StringIO()
    backend = load_backend(cheap_backend())
    quality = QualitySettings(k=4, nll_examples=8)
    train(spec, backend, load_dataset(spec), tmp_path, Progress(stream, enabled=False), Listener(), quality)
    assert heard == [
        ("epoch", 0),
        ("epoch", 1),
        ("scoring", {"quality.nll_k": "4", "quality.nll_examples": "8"}),
        ("scored", ["neg_elbo", "nll_is", "recon_mse", "recon_sse", "recon_term"]),
    ]
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 0", "epoch 1"]
    assert "train total" not in lines[0] and "train total" in lines[1]
    assert lines[2:] == ["scoring the test split (importance-sampled NLL with k=4 on the first 8 test examples)"]
