"""The reference Adam every backend trains with (docs/EQUIVALENCE.md, 'Adam').

Update t (1-based), with c_i = 1 - b_i^t and lr_t the scheduled learning rate:

    g <- g + wd p                                       (weight_decay coupled)
    m <- m + (1 - b1) (g - m)         v <- b2 v + (1 - b2) g^2
    p <- p (1 - lr_t wd)                                (weight_decay decoupled)
    p <- p - (lr_t / c1) * m / (sqrt(v) / sqrt(c2) + eps)

lr_t = lr * gamma^k with k the schedule periods completed before update t (an epoch of
``steps_per_epoch`` updates, or one update), computed as torch's ExponentialLR computes it:
the previous rate times gamma, once per period, in float64. The scalars lr_t / c1, sqrt(c2)
and 1 - lr_t wd are computed here, on the host, in float64 and cast to the working dtype by
each backend; eps stays outside the square root. This is torch.optim.Adam's (and, decoupled,
torch.optim.AdamW's) arithmetic, operation for operation (m is updated by lerp, as torch does).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Optional

import numpy as np

from aebench.spec.types import Adam


@dataclass(frozen=True)
class AdamScalars:
    """Host-side scalars of one update: step_size = lr_t / c1, bias_correction2_sqrt =
    sqrt(c2), and decay_factor = 1 - lr_t * wd for decoupled decay (1.0 otherwise)."""

    step_size: float
    bias_correction2_sqrt: float
    decay_factor: float = 1.0


def epoch_steps(n_examples: int, batch_size: int) -> int:
    """Updates in one epoch as aebench trains (full batches only, the partial one dropped), at
    least 1; the period of a ``per: epoch`` schedule in training and in bench."""
    return max(1, n_examples // batch_size)


def coupled_decay(opt: Adam) -> float:
    """The coefficient added to the gradient (coupled decay), 0.0 when there is none."""
    decay = opt.weight_decay
    return decay.coefficient if decay is not None and decay.form == "coupled" else 0.0


def decoupled_decay(opt: Adam) -> float:
    """The coefficient of the decoupled decay p <- p (1 - lr_t wd), 0.0 when there is none."""
    decay = opt.weight_decay
    return decay.coefficient if decay is not None and decay.form == "decoupled" else 0.0


def schedule_period(opt: Adam, steps_per_epoch: Optional[int]) -> Optional[int]:
    """Updates between two multiplications by gamma; None for a constant learning rate."""
    schedule = opt.schedule
    if schedule is None:
        return None
    if schedule.per == "step":
        return 1
    if steps_per_epoch is None or steps_per_epoch < 1:
        raise ValueError(f"a per-epoch schedule needs steps_per_epoch >= 1, got {steps_per_epoch}")
    return steps_per_epoch


def learning_rates(opt: Adam, steps_per_epoch: Optional[int]) -> Iterator[float]:
    """lr_t of updates t = 1, 2, 3, ...: the previous rate times gamma after each period
    (torch's ExponentialLR, not lr * gamma**k, which differs in the last bits). ValueError
    at once for a per-epoch schedule without ``steps_per_epoch``."""
    period = schedule_period(opt, steps_per_epoch)
    gamma = opt.schedule.gamma if opt.schedule is not None else 1.0
    return _products(opt.learning_rate, gamma, period)


def _products(lr: float, gamma: float, period: Optional[int]) -> Iterator[float]:
    t = 0
    while True:
        t += 1
        if period is not None and t > 1 and (t - 1) % period == 0:
            lr = lr * gamma
        yield lr


def adam_scalars(opt: Adam, steps_per_epoch: Optional[int]) -> Iterator[AdamScalars]:
    """The host scalars of updates t = 1, 2, 3, ..., in order (one stream per optimizer)."""
    rates = learning_rates(opt, steps_per_epoch)
    wd = decoupled_decay(opt)
    return (
        AdamScalars(lr / (1.0 - opt.beta1**t), math.sqrt(1.0 - opt.beta2**t), 1.0 - lr * wd if wd else 1.0)
        for t, lr in enumerate(rates, start=1)
    )


def scalar_tables(opt: Adam, steps_per_epoch: Optional[int], n_steps: int) -> dict[str, np.ndarray]:
    """The scalars of updates 1..n_steps as float64 arrays: step_size, bias_correction2_sqrt, decay_factor."""
    scalars = list(islice(adam_scalars(opt, steps_per_epoch), n_steps))
    return {
        name: np.array([getattr(s, name) for s in scalars], dtype=np.float64)
        for name in ("step_size", "bias_correction2_sqrt", "decay_factor")
    }


class NumpyAdam:
    """The reference Adam in NumPy: the oracle the backends' optimizers are checked against.

    ``steps_per_epoch`` is the period of a ``per: epoch`` schedule (required with one)."""

    def __init__(self, opt: Adam, params: dict[str, np.ndarray], steps_per_epoch: Optional[int] = None):
        self.opt = opt
        self.scalars = adam_scalars(opt, steps_per_epoch)
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New parameters after one step with ``grads``."""
        s = next(self.scalars)
        b1, b2, eps, wd = self.opt.beta1, self.opt.beta2, self.opt.epsilon, coupled_decay(self.opt)
        decoupled = decoupled_decay(self.opt) != 0.0
        out = {}
        for k, p in params.items():
            g = grads[k] + wd * p if wd else grads[k]
            self.m[k] = self.m[k] + (1 - b1) * (g - self.m[k])
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            decayed = p * s.decay_factor if decoupled else p
            out[k] = decayed - s.step_size * self.m[k] / (np.sqrt(self.v[k]) / s.bias_correction2_sqrt + eps)
        return out
