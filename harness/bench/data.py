"""The inputs of one benchmark cell, drawn in NumPy so that every framework gets the same.

The batch order is successive shuffled epochs joined and cut into full batches, so every
batch has the same size (nothing is dropped or padded) and a batch may be larger than the
data set (tabular specs). At most ``MAX_POOL_BATCHES`` batches of order and noise are kept;
step k uses batch k mod n, pool batch j made as training step j (family categorical: step j's
temperature, so bench step k runs at the temperature of step k mod n; under a schedule that
first moves after MAX_POOL_BATCHES steps or more, as the shipped one's 1000, every step runs at
its initial temperature). The reference Adam's scalars follow the spec's schedule with an
epoch of ``len(x_train) // batch_size`` steps, as training counts it (a bench has no epochs).
"""

from __future__ import annotations

import math

import numpy as np

from aebench.data.datasets import Dataset, one_hot
from aebench.data.noise import TRAIN_STREAM, batch_draws, draw_noise, stream
from aebench.plugins.adam import epoch_steps, scalar_tables
from aebench.plugins.bench_api import BenchData
from aebench.plugins.canonical import init_weights
from aebench.spec.shapes import plan_model
from aebench.spec.types import Spec

MAX_POOL_BATCHES = 64
DTYPES = {"float32": np.float32, "float64": np.float64}


def batch_order(n_examples: int, batch_size: int, n_batches: int, rng: np.random.Generator) -> np.ndarray:
    """(n_batches, batch_size) int32 indices: shuffled epochs, joined, cut into batches."""
    needed = n_batches * batch_size
    epochs = math.ceil(needed / n_examples)
    joined = np.concatenate([rng.permutation(n_examples) for _ in range(epochs)])
    return joined[:needed].reshape(n_batches, batch_size).astype(np.int32)


def pool_size(n_examples: int, batch_size: int) -> int:
    """Batches kept on the device: one epoch's worth, at least 1, at most MAX_POOL_BATCHES."""
    return max(1, min(MAX_POOL_BATCHES, n_examples // batch_size))


def make_bench_data(spec: Spec, data: Dataset, batch_size: int, max_steps: int) -> BenchData:
    """Everything a cell of ``spec`` at ``batch_size`` needs for up to ``max_steps`` steps."""
    plan = plan_model(spec)
    dtype = DTYPES[spec.dtype]
    n = pool_size(len(data.x_train), batch_size)
    order = batch_order(len(data.x_train), batch_size, n, stream(spec.train.seed, TRAIN_STREAM, 0))
    noise = draw_noise(spec, plan, n * batch_size, stream(spec.train.seed, TRAIN_STREAM, 0, 1), terms=False)
    terms_rng = stream(spec.train.seed, TRAIN_STREAM, 0, 2)
    per_batch = [batch_draws(spec, plan, batch_size, terms_rng, step) for step in range(n)]

    def pooled(a):  # (n B rows, ...) -> (n, B rows, ...): a decoder draw has B k rows per batch
        return None if a is None else a.reshape(n, -1, *a.shape[1:]).astype(dtype)

    classes = spec.model.conditioning.num_classes if spec.model.conditional else 0
    labels = one_hot(data.y_train, classes) if classes else None
    steps_per_epoch = epoch_steps(len(data.x_train), batch_size)
    scalars = scalar_tables(spec.optimizer, steps_per_epoch, max_steps)
    return BenchData(
        x=data.x_train.astype(dtype),
        labels=None if labels is None else labels.astype(dtype),
        order=order,
        eps=pooled(noise.eps),
        corruption=pooled(noise.corruption),
        weights={k: v.astype(dtype) for k, v in init_weights(plan, spec.init.kernel, spec.train.seed).items()},
        adam_step_size=scalars["step_size"].astype(dtype),
        adam_bias_correction2_sqrt=scalars["bias_correction2_sqrt"].astype(dtype),
        adam_decay_factor=scalars["decay_factor"].astype(dtype),
        steps_per_epoch=steps_per_epoch,
        draws={
            **{name: pooled(draw) for name, draw in noise.draws.items()},
            **{key: np.stack([batch[key] for batch in per_batch]).astype(dtype) for key in per_batch[0]},
        },
    )
