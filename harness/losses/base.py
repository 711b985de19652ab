"""What every loss term declares, and the float64 values its oracle reads.

A loss term is one module of this package holding a ``TERM``: its spec schema (the mapping
under ``loss:``), its rank (the order in which the total adds the terms, and results list
them), its weight in the total, its cross-field rules and its NumPy float64 oracle. Each
backend maps a term's name to its own implementation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, Optional

import numpy as np

from aebench.layers.base import Tape

Fail = Callable[[str, str], NoReturn]
"""(field path, message) -> raises the spec's one-line error."""


@dataclass(frozen=True)
class Forward:
    """The float64 intermediates of one forward pass that loss terms read, for a batch of B
    examples and k = ``samples`` posterior samples per example (model.latent.samples; 1 for
    families ae and categorical).

    Per example, B rows: x_in, the encoder's input (corrupted for denoising specs); code (family
    ae); mean and log_var, the posterior N(mean, exp(log_var)) (family vae); category_logits,
    (B, N K) (family categorical).
    Per sample, B k rows, example-major (rows i k .. i k + k - 1 belong to example i): z =
    mean + exp(log_var / 2) * eps, each example's k samples; logits, the decoder's output on
    z (a conditional spec's labels repeated k times). For k = 1 both have B rows.
    The pass's tape (aebench.layers.base.Tape): the intermediates layers tapped (``taps``, by
    canonical layer name), and ``stop_gradient`` for what a term holds constant for
    differentiation (recorded, or replayed by finite differences).
    """

    x_in: np.ndarray
    code: Optional[np.ndarray]
    mean: Optional[np.ndarray]
    log_var: Optional[np.ndarray]
    z: np.ndarray
    logits: np.ndarray
    samples: int = 1
    tape: Tape = field(default_factory=Tape)
    category_logits: Optional[np.ndarray] = None

    @property
    def taps(self) -> dict[str, dict[str, np.ndarray]]:
        return self.tape.taps

    def encoded(self) -> dict[str, np.ndarray]:
        """What Backend.encode returns for this pass's (clean) input: {'mean', 'log_var'}
        (family vae), {'logits'} (family categorical) or {'code'} (family ae)."""
        if self.mean is not None and self.log_var is not None:
            return {"mean": self.mean, "log_var": self.log_var}
        if self.category_logits is not None:
            return {"logits": self.category_logits}
        assert self.code is not None, "family ae has a code"
        return {"code": self.code}


def repeat_rows(a: np.ndarray, samples: int) -> np.ndarray:
    """Each row ``samples`` times in a row, example-major: the rows of z and the logits."""
    return a if samples == 1 else np.repeat(a, samples, axis=0)


@dataclass(frozen=True)
class OracleInputs:
    """What a term's oracle may read: the spec, its plan, float64 weights, the batch (x, labels,
    noise) and the forward pass; ``x`` is the batch's clean x (B rows), ``target`` the
    reconstruction target of the logits' rows (x repeated k times, B k rows)."""

    spec: Any
    plan: Any
    weights: dict[str, np.ndarray]
    batch: Any
    forward: Forward

    @property
    def x(self) -> np.ndarray:
        return np.asarray(self.batch.x, dtype=np.float64)

    @property
    def target(self) -> np.ndarray:
        return repeat_rows(self.x, self.forward.samples)


Decode = Callable[[np.ndarray], np.ndarray]
"""z (n, s, latent), s samples of each of the first n examples of QualityInputs.x -> the
decoder's output (n s, *data shape), example-major (a conditional spec's labels repeated s
times), in the backend's dtype as Backend.decode gives it (a Bernoulli likelihood clips the
probabilities at that dtype's eps: aebench.losses.reconstruction.bernoulli_log_likelihood)."""


@dataclass(frozen=True)
class QualityInputs:
    """What a term's quality metrics may read: the spec, its plan, the encoder's output on the
    first test examples (clean x: {'mean', 'log_var'} for family vae, {'logits'} for family
    categorical, {'code'} for family ae, float64), a generator of the quality step's own
    stream (for samples and projections), those examples (x, float64), the trained decoder
    (``decode``: see Decode), the trained model's canonical weights (float64, state included:
    to run layers of the model in NumPy, as aebench.losses._quantizers runs the decoder up to
    its quantizers) and the one-hot labels of those examples (conditional specs; the decoder
    reads them with the code)."""

    spec: Any
    plan: Any
    encoded: dict[str, np.ndarray]
    rng: np.random.Generator
    x: np.ndarray
    decode: Decode
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    labels: Optional[np.ndarray] = None


Draw = Callable[[Any, Any, int, np.random.Generator], dict[str, np.ndarray]]
"""(settings, model plan, batch size, generator) -> one batch's draws of a term, by key."""


def draw_key(term: str, key: str) -> str:
    """Where a term's draw ``key`` sits in a batch's Noise.draws: 'loss.TERM.KEY' (never a layer's name)."""
    return f"loss.{term}.{key}"


def no_rules(cfg: Any, spec: Any, fail: Fail) -> None:
    return None


def not_required(spec: Any) -> str:
    return ""


@dataclass(frozen=True)
class LossTerm:
    """Everything the harness knows about one loss term.

    name: its key under ``loss:`` and in results; schema: the dataclass it parses into;
    rank: its place in the total's sum (lower first) and in result columns; weight: its
    weight in the total, read from its settings; oracle: its unweighted float64 value;
    rules: cross-field checks, failing through ``fail(field, message)``; required: why a
    spec must have the term ("" when it need not); log_likelihood: for a term that is the
    negative log of the decoder's likelihood, log p(x|z) per row (settings, clean x, decoded
    output) -> (rows,), which the quality step's NLL uses; code_target: for a term that pulls
    the code's mean activation toward a value, that value (drawn on the code-activations figure);
    stands_in_for: the terms this one makes unnecessary (their ``required`` no longer applies:
    a decomposition of the KL stands in for the KL); draws: the random numbers the term needs
    per batch (prior samples, projections), drawn in NumPy from the batch's stream after every
    other draw and injected into every backend under draw_key(name, key); quality: metrics of
    a trained model that fit the term, from the test split's encodings (aebench.train.quality);
    figures: the figures that fit the term beyond every spec's own, by name from
    aebench.train.images.TERM_FIGURES ('samples': decoded prior draws, for a term that pulls the
    codes toward the prior; 'codes_against_prior'; 'latent_traversals').
    """

    name: str
    schema: type
    rank: int
    weight: Callable[[Any], float]
    oracle: Callable[[Any, OracleInputs], float]
    rules: Callable[[Any, Any, Fail], None] = no_rules
    required: Callable[[Any], str] = not_required
    log_likelihood: Optional[Callable[[Any, np.ndarray, np.ndarray], np.ndarray]] = None
    code_target: Optional[Callable[[Any], float]] = None
    stands_in_for: frozenset[str] = frozenset()
    draws: Optional[Draw] = None
    quality: Optional[Callable[[Any, QualityInputs], dict[str, float]]] = None
    figures: frozenset[str] = frozenset()


def reduce(per_element: np.ndarray, features: str, batch: str, samples: int = 1) -> float:
    """Reduce over every non-batch axis (sum or mean), over each example's ``samples`` rows
    (the mean; rows example-major, as Forward.z), then over the batch (mean or sum)."""
    flat = per_element.reshape(per_element.shape[0], -1)
    per_example = flat.sum(axis=1) if features == "sum" else flat.mean(axis=1)
    if samples > 1:
        per_example = per_example.reshape(-1, samples).mean(axis=1)
    return float(per_example.sum() if batch == "sum" else per_example.mean())


PRIOR_MATCHING_FIGURES = frozenset({"samples", "codes_against_prior"})
"""The figures of a term that pulls a deterministic code toward N(0, I): the decoder is then a
generative model whose samples are decoded prior draws."""


def prior_draw(cfg: Any, plan: Any, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch of samples of the prior N(0, I) over the code: {'prior': (B, latent)}."""
    return {"prior": rng.standard_normal((batch_size, plan.latent_size))}


def prior_matching_term(
    name: str,
    schema: type,
    rank: int,
    oracle: Callable[[Any, OracleInputs], float],
    rules: Callable[[Any, Any, Fail], None],
    quality: Callable[[Any, QualityInputs], dict[str, float]],
    draws: Draw = prior_draw,
) -> LossTerm:
    """A term that pulls a deterministic code toward N(0, I) from injected prior samples
    (WAE's MMD, SWAE's sliced distance): weighted by its ``weight``, with the figures of a
    generative model (PRIOR_MATCHING_FIGURES)."""
    return LossTerm(
        name,
        schema,
        rank=rank,
        weight=lambda cfg: cfg.weight,
        oracle=oracle,
        rules=rules,
        draws=draws,
        quality=quality,
        figures=PRIOR_MATCHING_FIGURES,
    )
