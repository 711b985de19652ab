"""The loss-term registry: every module of this package that defines ``TERM`` is a loss term.

Adding a loss term is one module here (schema, rank, weight, rules, oracle:
aebench.losses.base.LossTerm) plus one implementation per backend, in that backend's table
from term name to function. A spec's ``loss:`` mapping has one optional key per term
(``Loss``, built from the registry); results name the terms in rank order after 'total'.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Collection
from typing import Any, Optional

import numpy as np

from aebench.errors import LossTermNotImplemented
from aebench.losses.base import LossTerm, QualityInputs, draw_key


def _discover() -> dict[str, LossTerm]:
    found = []
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base" and not module.name.startswith("_"):  # _name: helpers shared by terms
            found.append(importlib.import_module(f"{__name__}.{module.name}").TERM)
    return {term.name: term for term in sorted(found, key=lambda term: term.rank)}


LOSS_TERMS: dict[str, LossTerm] = _discover()
"""Every loss term, by its key under ``loss:``, in rank order."""

LOSS_SCHEMA: Any = dataclasses.make_dataclass(
    "Loss",
    [(name, Optional[term.schema], dataclasses.field(default=None)) for name, term in LOSS_TERMS.items()],
    frozen=True,
)
"""The ``loss:`` mapping: one optional key per registered term (rules say which a spec needs)."""
LOSS_SCHEMA.__doc__ = "The loss terms of a spec, one optional entry per registered term (aebench.losses)."
LOSS_SCHEMA.__module__ = __name__  # pickled specs (worker processes) find the class as aebench.losses.Loss
Loss = LOSS_SCHEMA


def present_terms(loss: Any) -> tuple[str, ...]:
    """The terms a spec's loss has, in rank order."""
    return tuple(name for name in LOSS_TERMS if getattr(loss, name) is not None)


def term_weights(loss: Any) -> dict[str, float]:
    """The weight of each present term in the total."""
    return {name: LOSS_TERMS[name].weight(getattr(loss, name)) for name in present_terms(loss)}


def decoder_term(loss: Any) -> str:
    """The present term that is the decoder's negative log-likelihood (the reconstruction)."""
    return next(name for name in present_terms(loss) if LOSS_TERMS[name].log_likelihood is not None)


def decoder_log_likelihood(loss: Any, x: np.ndarray, decoded: np.ndarray) -> np.ndarray:
    """log p(x|z) per row under the spec's decoder term (LossTerm.log_likelihood), float64."""
    name = decoder_term(loss)
    likelihood = LOSS_TERMS[name].log_likelihood
    assert likelihood is not None, "decoder_term picks a term with a likelihood"
    return likelihood(getattr(loss, name), x, decoded)


def code_targets(loss: Any) -> dict[str, float]:
    """The mean code activation each present term pulls toward (LossTerm.code_target), by term."""
    return {
        name: target(getattr(loss, name))
        for name in present_terms(loss)
        if (target := LOSS_TERMS[name].code_target) is not None
    }


def stood_in_for(loss: Any) -> frozenset[str]:
    """The terms the present terms stand in for (LossTerm.stands_in_for): no longer required."""
    return frozenset().union(*(LOSS_TERMS[name].stands_in_for for name in present_terms(loss)))


def term_draws(loss: Any, plan: Any, batch_size: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One batch's draws of the present terms that take them (LossTerm.draws), in rank order,
    keyed draw_key(term, key), float64."""
    draws: dict[str, np.ndarray] = {}
    for name in present_terms(loss):
        if (draw := LOSS_TERMS[name].draws) is not None:
            made = draw(getattr(loss, name), plan, batch_size, rng)
            draws.update({draw_key(name, key): np.asarray(value, np.float64) for key, value in made.items()})
    return draws


def term_quality(loss: Any, inputs: QualityInputs) -> dict[str, float]:
    """The quality metrics of the present terms that have them (LossTerm.quality), by metric name."""
    metrics: dict[str, float] = {}
    for name in present_terms(loss):
        if (quality := LOSS_TERMS[name].quality) is not None:
            metrics.update(quality(getattr(loss, name), inputs))
    return metrics


def term_figures(loss: Any) -> frozenset[str]:
    """The figures the present terms ask for (LossTerm.figures)."""
    return frozenset().union(*(LOSS_TERMS[name].figures for name in present_terms(loss)))


def check_terms_implemented(backend: str, implemented: Collection[str], loss: Any) -> None:
    """LossTermNotImplemented for the first present term a backend lacks."""
    for name in present_terms(loss):
        if name not in implemented:
            raise LossTermNotImplemented(backend, name)
