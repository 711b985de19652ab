"""Training a spec on one backend: the framework-neutral loop, metrics and figures.

The loop draws every epoch's order and noise in NumPy (noise.py) and hands them to the
backend's trainer, which keeps the data on its device. After every epoch the test split is
evaluated with fixed noise, and the epoch's row is appended to metrics.csv and
metrics.json at once, so a run that fails later keeps everything measured before.
"""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

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
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec
from aebench.train.evaluate import evaluate
from aebench.train.images import write_figures


class TrainingDiverged(AebenchError):
    """A loss became NaN or infinite; what was measured before is kept."""

    exit_code = 1


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
    on_epoch: Optional[Callable[[dict], None]] = None,
    on_trained: Optional[Callable[[object], None]] = None,
) -> list[dict]:
    """Train from the spec's NumPy initialisation for spec.train.epochs; returns the metric rows.

    Row 0 is the untrained model's test loss. Writes metrics.csv, metrics.json, spec.yaml and
    the figures of images.write_figures into ``out``. ``on_epoch`` gets each row as it is
    written; ``on_trained`` gets the trained model (the backend's handle) after the figures.
    """
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
    _record(log, on_epoch, 0, 0.0, None, evaluate(backend, model, spec, plan, data.x_test, test_labels))
    for epoch in range(1, spec.train.epochs + 1):
        start = time.perf_counter()
        order = epoch_order(len(data.x_train), spec.train.batch_size, stream(spec.train.seed, TRAIN_STREAM, epoch))
        if len(order) == 0:
            raise AebenchError(
                f"train.batch_size: {spec.train.batch_size} is larger than the {len(data.x_train)} training examples"
            )
        noise_rng = stream(spec.train.seed, TRAIN_STREAM, epoch, 1)
        steps = (Step(idx, draw_noise(spec, plan, len(idx), noise_rng)) for idx in order)
        losses = trainer.run(progress.wrap(steps, len(order), f"epoch {epoch}/{spec.train.epochs}"))
        _check_finite(losses, terms, epoch, out)
        train_terms = dict(zip(terms, losses.mean(axis=0).tolist()))
        test_terms = evaluate(backend, model, spec, plan, data.x_test, test_labels)
        _record(log, on_epoch, epoch, time.perf_counter() - start, train_terms, test_terms)
    write_figures(backend, model, spec, plan, data, out)
    if on_trained:
        on_trained(model)
    return log.rows


def _record(
    log: MetricsLog,
    on_epoch: Optional[Callable[[dict], None]],
    epoch: int,
    seconds: float,
    train_terms: Optional[dict],
    test_terms: dict,
) -> None:
    row = {"epoch": epoch, "seconds": round(seconds, 4)}
    row.update({f"train_{k}": v for k, v in (train_terms or {}).items()})
    row.update({f"test_{k}": v for k, v in test_terms.items()})
    log.add(row)
    if on_epoch:
        on_epoch(row)


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
