"""The categorical latent of family categorical (Jang et al. 2017, "Categorical Reparameterization
with Gumbel-Softmax"; Maddison et al. 2017, "The Concrete Distribution"), in NumPy float64: the
oracle's, the quality step's and the figures' arithmetic. Every backend writes the same formulas.

The encoder's head ``logits`` gives (B, N K) values, read as N variables of K categories
(variable n holds columns n K .. n K + K - 1). With q_n = softmax(logits_n) over the K categories:

- the sample (the reparameterisation): y_n = softmax((logits_n + g_n) / tau) over the categories,
  g Gumbel(0, 1) noise drawn in NumPy (Noise.eps, ``gumbel_noise``) and tau the batch's
  temperature (Noise.draws[TEMPERATURE_KEY], ``aebench.spec.types.Temperature``); divided by tau,
  never multiplied by 1 / tau (the two round differently);
- soft (``hard: false``): z = y; hard (``hard: true``, the straight-through Gumbel-Softmax):
  z = y + stop_gradient(one_hot(y) - y), whose value is the one-hot of each variable's largest
  y (the first category where several tie) and whose gradient is the soft sample's;
- z is flattened back to (B, N K), the decoder's input.

The decoder's prior is uniform over the K categories of each variable, independently: a prior
sample is one one-hot vector per variable (``prior_codes``).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from aebench.layers.base import Tape

TEMPERATURE_KEY = "latent.temperature"
"""Where a batch's temperature sits in Noise.draws: a 0-d float64 array, one value for the
batch (never a layer's name, nor a loss term's draw_key)."""


def gumbel_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gumbel(0, 1) draws, -log(-log u) with u uniform on (0, 1), in float64: NumPy's
    Generator.gumbel, which computes exactly that and redraws u = 1 (where -log(-log u) is
    infinite), so every draw is finite (between about -3.6 and 37)."""
    return rng.gumbel(size=shape)


def per_variable(values: np.ndarray, categories: int) -> np.ndarray:
    """(B, N K) -> (B, N, K): each row's N variables of ``categories`` values."""
    return np.asarray(values, np.float64).reshape(len(values), -1, categories)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, as logits - max - log sum exp(logits - max): finite where
    softmax underflows to 0 (log(softmax) gives -inf there, and q log q a NaN)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    """softmax over the last axis, shifted by the maximum (no overflow at small temperatures)."""
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def first_max_one_hot(y: np.ndarray) -> np.ndarray:
    """One-hot over the last axis of each row's largest entry; of ties, the first (np.argmax)."""
    return np.eye(y.shape[-1])[np.argmax(y, axis=-1)]


STRAIGHT_THROUGH_KEY = "latent.straight_through"
"""Where the oracle's tape holds a straight-through sample's one_hot(y) - y (aebench.layers.base.Tape)."""


def relaxed_sample(
    logits: np.ndarray,
    gumbel: np.ndarray,
    temperature: float,
    categories: int,
    hard: bool,
    tape: Optional[Tape] = None,
) -> np.ndarray:
    """z of (B, N K) from the encoder's logits, the Gumbel noise and the temperature (the module
    docstring): the soft sample y, or (``hard``) y + stop_gradient(one_hot(y) - y), the held
    difference recorded on ``tape`` (a replaying tape gives the recorded one, so finite
    differences of the oracle along the weights are the straight-through gradient:
    aebench.check.equivalence)."""
    y = softmax((per_variable(logits, categories) + per_variable(gumbel, categories)) / temperature)
    if hard:
        held = first_max_one_hot(y) - y
        y = y + (held if tape is None else tape.stop_gradient(STRAIGHT_THROUGH_KEY, held))
    return y.reshape(len(logits), -1)


def kl_to_uniform(logits: np.ndarray, categories: int) -> np.ndarray:
    """KL(q_n || Uniform(K)) = sum_k q_nk (log q_nk + log K) per variable, (B, N), with log q from
    log_softmax (never log(softmax), nor log(q + eps) as PyTorch-VAE and the authors' notebook)."""
    log_q = log_softmax(per_variable(logits, categories))
    return (np.exp(log_q) * (log_q + math.log(categories))).sum(axis=-1)


def mode_code(logits: np.ndarray, categories: int) -> np.ndarray:
    """The posterior's mode as a code: each variable's most probable category one-hot, (B, N K)
    (the first of tied ones): what a reconstruction is decoded from."""
    return first_max_one_hot(per_variable(logits, categories)).reshape(len(logits), -1)


def prior_codes(rng: np.random.Generator, n: int, variables: int, categories: int) -> np.ndarray:
    """``n`` codes drawn from the uniform prior: one category per variable, one-hot, (n, N K)."""
    return np.eye(categories)[rng.integers(0, categories, (n, variables))].reshape(n, -1)


def usage_entropy(logits: np.ndarray, categories: int) -> float:
    """The mean over the variables of the entropy (nats) of the categories' average posterior
    probability over the examples: log K when every category is used alike, 0 when each variable
    puts every example in one category."""
    used = np.exp(log_softmax(per_variable(logits, categories))).mean(axis=0)
    return float(-(used * np.log(np.where(used > 0, used, 1.0))).sum(axis=-1).mean())


def log_density_ratio(logits: np.ndarray, codes: np.ndarray, categories: int) -> np.ndarray:
    """log p(z) - log q(z|x) of one-hot codes z under the uniform prior and the posterior of
    ``logits``: -N log K - sum_n log q_n(z_n); logits (B, N K), codes (B, S, N K) -> (B, S)."""
    log_q = log_softmax(per_variable(logits, categories))  # (B, N, K)
    picked = (codes.reshape(*codes.shape[:2], -1, categories) * log_q[:, None]).sum(axis=(2, 3))
    return -log_q.shape[1] * math.log(categories) - picked


def posterior_codes(rng: np.random.Generator, logits: np.ndarray, samples: int, categories: int) -> np.ndarray:
    """``samples`` exact draws of the categorical posterior per row, one-hot, (B, S, N K): the
    Gumbel-max trick, argmax(logits + g) with g Gumbel(0, 1) (gumbel_noise)."""
    log_q = per_variable(logits, categories)[:, None]  # (B, 1, N, K)
    g = gumbel_noise(rng, (len(logits), samples, *log_q.shape[2:]))
    return first_max_one_hot(log_q + g).reshape(len(logits), samples, -1)
