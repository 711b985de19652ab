"""contractive: weight * ||J_f(x)||_F^2, the squared Frobenius norm of the code's Jacobian
(family ae, an encoder of affine layers: docs/EQUIVALENCE.md, 'The contractive penalty')."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from aebench.layers import LAYER_KINDS, apply_layer, kind_of
from aebench.layers.activations import activation_slope
from aebench.losses.base import Fail, LossTerm, OracleInputs, reduce
from aebench.spec.schema import at_least, rule


@dataclass(frozen=True)
class Contractive:
    """weight * ||J_f(x)||_F^2, the squared Frobenius norm of the code's Jacobian."""

    weight: float = field(metadata=rule(at_least(0)))
    batch: Literal["mean", "sum"]


def code_jacobian(plan: Any, weights: dict[str, np.ndarray], x_in: np.ndarray) -> np.ndarray:
    """d code / d x for an encoder of affine layers, shape (B, features of x, code units).

    Chain rule through each layer: J <- (J @ W) * act'(pre). Label inputs of a conditional
    spec are not differentiated (only the first rows of the first kernel).
    """
    h = x_in
    jac = None
    for layer_plan in plan.encoder + plan.heads:
        kernel = weights[f"{layer_plan.name}.kernel"]
        pre, h = apply_layer(layer_plan, weights, h)
        slope = activation_slope(layer_plan.layer.activation, pre)[:, None, :]
        jac = (kernel[: x_in.shape[1] - plan.label_size] if jac is None else jac @ kernel) * slope
    assert jac is not None, "an encoder has at least its code head"
    return jac


def contractive_loss(cfg: Contractive, jacobian: np.ndarray) -> float:
    """||J||_F^2 per example, reduced over the batch."""
    return reduce(jacobian**2, "sum", cfg.batch)


def oracle(cfg: Contractive, inputs: OracleInputs) -> float:
    x_in = inputs.forward.x_in
    labels = inputs.batch.labels
    joined = x_in if labels is None else np.concatenate([x_in, np.asarray(labels, dtype=np.float64)], axis=1)
    return contractive_loss(cfg, code_jacobian(inputs.plan, inputs.weights, joined))


def rules(cfg: Contractive, spec: Any, fail: Fail) -> None:
    if spec.model.family != "ae":
        fail("loss.contractive", "only allowed for family ae (the Jacobian of the deterministic code)")
    for i, layer in enumerate(spec.model.encoder):
        if not kind_of(layer).affine:
            affine = ", ".join(name for name, kind in LAYER_KINDS.items() if kind.affine)
            fail(
                f"model.encoder[{i}].type",
                f"loss.contractive needs an encoder of layers whose Jacobian is their kernel ({affine}); "
                f"got {layer.type}",
            )


TERM = LossTerm("contractive", Contractive, rank=3, weight=lambda cfg: cfg.weight, oracle=oracle, rules=rules)
