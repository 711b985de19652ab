"""Training a spec on one backend: the framework-neutral loop, metrics, figures and quality.

The loop draws every epoch's order and noise in NumPy (noise.py) and hands them to the
backend's trainer, which keeps the data on its device. After every epoch the test split is
evaluated with fixed noise, and the epoch's row is appended to metrics.csv and
metrics.json at once, so a run that fails later keeps everything measured before. Whoever
records the run (tracking) listens to the loop through one TrainingListener.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional, Protocol

import numpy as np
import yaml

from aebench import __version__
from aebench.data.datasets import Dataset, one_hot
from aebench.data.noise import TRAIN_STREAM, draw_noise, epoch_order, stream
from aebench.errors import AebenchError
from aebench.plugins.adam import epoch_steps
from aebench.plugins.backend_api import Backend, Step, loss_term_names
from aebench.plugins.canonical import init_weights
from aebench.progress import Progress
from aebench.scoring import QualitySettings
from aebench.spec.shapes import ModelPlan, plan_model
from aebench.spec.types import Spec
from aebench.train.evaluate import evaluate
from aebench.train.images import write_figures
from aebench.train.quality import quality_metrics


class TrainingDiverged(AebenchError):
    """A loss became NaN or infinite; what was measured before is kept."""

    exit_code = 1


class TrainingListener(Protocol):
    """What loop.train reports while it runs, in this order:

    1. ``epoch(row)`` once per metrics row, right after the row is written to metrics.csv and
       metrics.json: row 0 is the untrained model (test terms only), then one row per epoch
       (``epoch``, ``seconds``, ``train_<term>``, ``test_<term>``).
    2. After the last epoch the figures are written; where the run is scored (train's
       ``quality``), ``scoring(params)`` comes next, before the quality step: the settings that
       shape the scores as params (``quality.nll_k`` and ``quality.nll_examples`` for family
       vae and categorical; empty for family ae).
    3. ``scored(metrics)`` once the quality step is done and quality.json written: the metrics
       of quality.quality_metrics by name.

    Nothing more comes: when train returns, everything has been reported. An exception raised
    by a listener (or by the loop: a diverged loss, Ctrl-C) ends the training there, with
    everything written before kept; how the run ends is the listener owner's business.
    """

    def epoch(self, row: dict) -> None: ...

    def scoring(self, params: dict[str, str]) -> None: ...

    def scored(self, metrics: dict[str, float]) -> None: ...


class Unheard:
    """The TrainingListener of a training no one records: it does nothing."""

    def epoch(self, row: dict) -> None:
        pass

    def scoring(self, params: dict[str, str]) -> None:
        pass

    def scored(self, metrics: dict[str, float]) -> None:
        pass


@dataclass
class MetricsLog:
    """metrics.csv and metrics.json in ``out``, rewritten after every epoch."""

    out: Path
    terms: tuple[str, ...]
    meta: dict
    rows: list[dict] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return ["epoch", "seconds"] + [f"train_{t}" for t in self.terms] + [f"test_{t}" for t in self.terms]

    def add(self, row: dict) -> None:
        self.rows.append(row)
        with open(self.out / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns, restval="")
            writer.writeheader()
            writer.writerows(self.rows)
        _write_json(self.out / "metrics.json", {**self.meta, "epochs": self.rows})


def _write_json(path: Path, payload: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value))


def train(
    spec: Spec,
    backend: Backend,
    data: Dataset,
    out: Path,
    progress: Optional[Progress] = None,
    listener: Optional[TrainingListener] = None,
    quality: Optional[QualitySettings] = None,
) -> list[dict]:
    """Train from the spec's NumPy initialisation for spec.train.epochs; returns the metric rows.

    Row 0 is the untrained model's test loss. Writes metrics.csv, metrics.json, spec.yaml and
    the figures of images.write_figures into ``out``; with ``quality``, then scores the trained
    model on the test split (quality.quality_metrics) into quality.json. ``listener`` hears of
    each step as TrainingListener says. With ``progress`` it draws each epoch's bar and prints a
    line per row and one before a VAE's (slow) scoring; without, it prints nothing.
    """
    listener = listener or Unheard()
    say = progress.line if progress is not None else _silent
    progress = progress or Progress(enabled=False)
    out.mkdir(parents=True, exist_ok=True)
    plan = plan_model(spec)
    terms = loss_term_names(spec)
    (out / "spec.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    log = MetricsLog(out, terms, _meta(spec, backend, data))
    model = backend.build(spec)
    backend.set_weights(model, init_weights(plan, spec.init.kernel, spec.train.seed))
    n_classes = spec.model.conditioning.num_classes if spec.model.conditional else 0
    train_labels = one_hot(data.y_train, n_classes) if n_classes else None
    test_labels = one_hot(data.y_test, n_classes) if n_classes else None
    steps_per_epoch = epoch_steps(len(data.x_train), spec.train.batch_size)  # epoch_order's full batches
    trainer = backend.trainer(model, data.x_train, train_labels, steps_per_epoch)
    untrained = evaluate(backend, model, spec, plan, data.x_test, test_labels)
    _record(log, listener, say, 0, 0.0, None, untrained)
    for epoch in range(1, spec.train.epochs + 1):
        start = time.perf_counter()
        order = epoch_order(len(data.x_train), spec.train.batch_size, stream(spec.train.seed, TRAIN_STREAM, epoch))
        if len(order) == 0:
            raise AebenchError(
                f"train.batch_size: {spec.train.batch_size} is larger than the {len(data.x_train)} training examples"
            )
        steps = epoch_steps_of(spec, plan, epoch, order)
        losses = trainer.run(progress.wrap(steps, len(order), f"epoch {epoch}/{spec.train.epochs}"))
        _check_finite(losses, terms, epoch, out)
        train_terms = dict(zip(terms, losses.mean(axis=0).tolist()))
        test_terms = evaluate(backend, model, spec, plan, data.x_test, test_labels)
        _record(log, listener, say, epoch, time.perf_counter() - start, train_terms, test_terms)
    write_figures(backend, model, spec, plan, data, out)
    if quality is not None:
        params = _scoring_params(spec, quality, len(data.x_test))
        listener.scoring(params)
        if params:
            say(
                f"scoring the test split (importance-sampled NLL with k={params['quality.nll_k']} "
                f"on the first {params['quality.nll_examples']} test examples)"
            )
        metrics = quality_metrics(backend, model, spec, plan, data, quality)
        (out / "quality.json").write_text(json.dumps(metrics, indent=2) + "\n")
        listener.scored(metrics)
    return log.rows


def epoch_steps_of(spec: Spec, plan: ModelPlan, epoch: int, order: np.ndarray) -> Iterator[Step]:
    """Epoch ``epoch``'s training steps (1-based epochs), one per row of ``order``, their noise
    drawn from the epoch's stream as they are taken; step i of the epoch is training step
    (epoch - 1) * len(order) + i, whose index sets family categorical's temperature."""
    noise_rng = stream(spec.train.seed, TRAIN_STREAM, epoch, 1)
    first = (epoch - 1) * len(order)
    for i, idx in enumerate(order):
        yield Step(idx, draw_noise(spec, plan, len(idx), noise_rng, step=first + i))


def _silent(text: str) -> None:
    pass


def _scoring_params(spec: Spec, settings: QualitySettings, n_test: int) -> dict[str, str]:
    """The settings of the quality step that shape the scores: the NLL's, for family vae and
    categorical: Model.generative)."""
    if not spec.model.generative:
        return {}
    return {"quality.nll_k": str(settings.k), "quality.nll_examples": str(settings.examples(n_test))}


def _record(
    log: MetricsLog,
    listener: TrainingListener,
    say: Callable[[str], None],
    epoch: int,
    seconds: float,
    train_terms: Optional[dict],
    test_terms: dict,
) -> None:
    row = {"epoch": epoch, "seconds": round(seconds, 4)}
    row.update({f"train_{k}": v for k, v in (train_terms or {}).items()})
    row.update({f"test_{k}": v for k, v in test_terms.items()})
    log.add(row)
    listener.epoch(row)
    train_text = "" if train_terms is None else f"train total {row['train_total']:.4f}, "
    say(f"epoch {epoch}: {train_text}test total {row['test_total']:.4f} ({row['seconds']:.1f} s)")


def _check_finite(losses: np.ndarray, terms: tuple[str, ...], epoch: int, out: Path) -> None:
    bad = ~np.isfinite(losses)
    if bad.any():
        step, col = map(int, np.argwhere(bad)[0])
        raise TrainingDiverged(
            f"epoch {epoch}, step {step + 1}: {terms[col]} loss is {losses[step, col]}; "
            f"metrics of the epochs before are in {out}"
        )


def _meta(spec: Spec, backend: Backend, data: Dataset) -> dict:
    return {
        "spec": spec.name,
        "backend": backend.name,
        "versions": backend.versions(),
        "device": backend.device(),
        "dtype": spec.dtype,
        "optimizer": spec.optimizer.implementation,
        "data": data.source,
        "n_train": len(data.x_train),
        "n_test": len(data.x_test),
        "aebench": __version__,
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
