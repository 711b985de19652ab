"""The reference Adam every backend trains with (docs/EQUIVALENCE.md, 'Adam').

    m <- m + (1 - b1) (g - m)         v <- b2 v + (1 - b2) g^2
    p <- p - (lr / c1) * m / (sqrt(v) / sqrt(c2) + eps),   c_i = 1 - b_i^t

The scalars lr / c1 and sqrt(c2) are computed here, on the host, in float64 and cast to the
working dtype by each backend; eps stays outside the square root; no weight decay. This is
torch.optim.Adam's arithmetic, operation for operation (m is updated by lerp, as torch does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from aebench.spec.types import Adam


@dataclass(frozen=True)
class AdamScalars:
    """Host-side scalars of update number ``step`` (1-based)."""

    step_size: float
    bias_correction2_sqrt: float


def adam_scalars(opt: Adam, step: int) -> AdamScalars:
    c1 = 1.0 - opt.beta1**step
    c2 = 1.0 - opt.beta2**step
    return AdamScalars(opt.learning_rate / c1, math.sqrt(c2))


class NumpyAdam:
    """The reference Adam in NumPy: the oracle the backends' optimizers are checked against."""

    def __init__(self, opt: Adam, params: dict[str, np.ndarray]):
        self.opt, self.step = opt, 0
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """New parameters after one step with ``grads``."""
        self.step += 1
        s = adam_scalars(self.opt, self.step)
        b1, b2, eps = self.opt.beta1, self.opt.beta2, self.opt.epsilon
        out = {}
        for k, p in params.items():
            g = grads[k]
            self.m[k] = self.m[k] + (1 - b1) * (g - self.m[k])
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            out[k] = p - s.step_size * self.m[k] / (np.sqrt(self.v[k]) / s.bias_correction2_sqrt + eps)
        return out
