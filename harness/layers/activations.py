"""Activations: the spec's schema and the NumPy float64 oracle of each, with its slope.

Every activation whose frameworks disagree on a default states it in the spec: leaky_relu
its slope (Keras 0.3, PyTorch 0.01), gelu its form (exact, with erf: the default of PyTorch
and Keras; or the tanh approximation: the default of jax.nn.gelu and Flax). elu's alpha
defaults to 1.0, as in every framework.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, Optional

import numpy as np

from aebench.spec.schema import Parser

ActivationName = Literal["linear", "relu", "leaky_relu", "sigmoid", "tanh", "elu", "gelu", "silu"]
GeluForm = Literal["exact", "tanh"]
_OWN_FIELDS = {"negative_slope": "leaky_relu", "alpha": "elu", "approximate": "gelu"}


@dataclass(frozen=True)
class Activation:
    """An activation: a name, or a mapping with its settings.

    leaky_relu must state its slope (Keras defaults to 0.3, PyTorch to 0.01) and gelu its
    form, ``approximate: exact`` (0.5 x (1 + erf(x / sqrt 2))) or ``approximate: tanh``
    (0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))); elu's alpha is 1.0 unless given.
    """

    name: ActivationName
    negative_slope: Optional[float] = None
    alpha: Optional[float] = None
    approximate: Optional[GeluForm] = None

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> Activation:
        if isinstance(value, str):
            value = {"name": value}
        act = parser.parse_dataclass(cls, value, path)
        if act.name == "leaky_relu" and act.negative_slope is None:
            parser.fail(
                path,
                "leaky_relu needs an explicit slope (Keras' default is 0.3, PyTorch's 0.01): "
                "write {name: leaky_relu, negative_slope: 0.3}",
            )
        if act.name == "gelu" and act.approximate is None:
            parser.fail(
                path,
                "gelu needs its form stated (PyTorch and Keras default to exact, jax.nn.gelu to tanh): "
                "write {name: gelu, approximate: exact} or {name: gelu, approximate: tanh}",
            )
        for own, owner in _OWN_FIELDS.items():
            if act.name != owner and getattr(act, own) is not None:
                parser.fail(f"{path}.{own}", f"only allowed with {owner}, not {act.name}")
        for number in ("negative_slope", "alpha"):
            value = getattr(act, number)
            if value is not None and not 0 <= value < math.inf:
                parser.fail(f"{path}.{number}", f"must be a finite number >= 0, got {value!r}")
        return act

    @property
    def elu_alpha(self) -> float:
        return 1.0 if self.alpha is None else self.alpha

    def to_yaml(self) -> Any:
        settings = {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
        return self.name if len(settings) == 1 else settings


LINEAR = Activation("linear")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -x))


_erf = np.frompyfunc(math.erf, 1, 1)
_GELU_TANH_SCALE = math.sqrt(2 / math.pi)


def erf(x: np.ndarray) -> np.ndarray:
    """The error function, elementwise, in float64 (NumPy has none)."""
    return _erf(x).astype(np.float64)


def _gelu_tanh_inner(x: np.ndarray) -> np.ndarray:
    return _GELU_TANH_SCALE * (x + 0.044715 * x**3)


def activate(act: Activation, x: np.ndarray) -> np.ndarray:
    """The activation of ``x``, elementwise, in float64."""
    if act.name == "linear":
        return x
    if act.name == "relu":
        return np.maximum(x, 0.0)
    if act.name == "leaky_relu":
        return np.where(x >= 0, x, act.negative_slope * x)
    if act.name == "sigmoid":
        return sigmoid(x)
    if act.name == "tanh":
        return np.tanh(x)
    if act.name == "elu":
        return np.where(x > 0, x, act.elu_alpha * np.expm1(np.minimum(x, 0)))
    if act.name == "gelu" and act.approximate == "exact":
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))
    if act.name == "gelu":
        return 0.5 * x * (1 + np.tanh(_gelu_tanh_inner(x)))
    if act.name == "silu":
        return x * sigmoid(x)
    raise ValueError(act.name)


def activation_slope(act: Activation, x: np.ndarray) -> np.ndarray:
    """d activate(x) / dx, elementwise (relu's slope at 0 taken as 0, as autodiff does)."""
    if act.name == "linear":
        return np.ones_like(x)
    if act.name == "relu":
        return (x > 0).astype(x.dtype)
    if act.name == "leaky_relu":
        return np.where(x >= 0, 1.0, act.negative_slope or 0.0)
    if act.name == "sigmoid":
        s = sigmoid(x)
        return s * (1 - s)
    if act.name == "tanh":
        return 1 - np.tanh(x) ** 2
    if act.name == "elu":
        return np.where(x > 0, 1.0, act.elu_alpha * np.exp(np.minimum(x, 0)))
    if act.name == "gelu" and act.approximate == "exact":
        return 0.5 * (1 + erf(x / math.sqrt(2))) + x * np.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    if act.name == "gelu":
        t = np.tanh(_gelu_tanh_inner(x))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * _GELU_TANH_SCALE * (1 + 3 * 0.044715 * x**2)
    if act.name == "silu":
        s = sigmoid(x)
        return s * (1 + x * (1 - s))
    raise ValueError(act.name)
