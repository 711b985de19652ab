"""vector_quantizer: each vector along the last axis replaced by its nearest code of a codebook
(van den Oord et al. 2017, "Neural Discrete Representation Learning", section 3.1).

``{type: vector_quantizer, codes: K, update: gradient}`` quantizes an input of shape (n, D) or
(H, W, D) (or flat (D,), one vector per example): every vector z of size D, in the canonical
(NHWC) order, is replaced by the code e_k of the (K, D) codebook with

    d_k(z) = ||z||^2 - 2 z.e_k + ||e_k||^2        (added left to right)
    k(z)   = the first (lowest) k with d_k(z) = min_j d_j(z)

the expanded form every VQ-VAE implementation computes (a matmul instead of a (N, K, D)
difference); it rounds differently from sum((z - e_k)^2), so in float32 it may pick another
code than float64 where two distances lie within its rounding (docs/EQUIVALENCE.md, "The zoo's
loss terms"). torch.argmin, jnp.argmin and NumPy document the first index among equal
distances; keras.ops.argmin documents no rule, and on the JAX engine casts float64 to float32
first, so the Keras backend takes the first index of the minimum itself.

The output is the straight-through estimator z + stop_gradient(z_q - z): z_q in value (up to
rounding), the identity for the gradient, which passes the decoder's gradient to the encoder
unchanged. The codebook gets its gradient from the ``codebook`` loss term (``update:
gradient``), or is not trained by gradient at all (``update: ema``):

``update: ema, decay: gamma, epsilon: eps`` keeps the codebook as state, with the cluster sizes
N (K,) and the sums m (K, D) of the vectors assigned to each code (the paper's appendix A.1;
Sonnet's VectorQuantizerEMA). A training-mode pass quantizes with the codebook as it is, then
updates, with n_k the vectors that picked code k in the batch:

    N_k <- gamma N_k + (1 - gamma) n_k
    m_k <- gamma m_k + (1 - gamma) sum of those vectors
    e_k <- m_k / ((N_k + eps) / (sum_j N_j + K eps) * sum_j N_j)      (Laplace smoothing of N)

N and m start at zero and are not debiased: the bias (1 - gamma^t) cancels in m_k / N_k except
through eps (Sonnet 2 divides both by 1 - gamma^t, which amounts to eps (1 - gamma^t) here;
Sonnet 1 and rosinality's vq-vae-2 do not). A code no batch has picked yet becomes the zero
vector at the first update (m_k = 0), as in Sonnet 2. Evaluation mode leaves the state alone.

Parameters: ``embeddings`` (K, D), the codebook, drawn uniform in [-1/K, 1/K) (PyTorch-VAE's VectorQuantizer),
trainable with ``update: gradient``, state with ``ema``; with ``ema`` also the state
``cluster_size`` (K,) and ``embedding_sum`` (K, D), zeros. The layer belongs in the decoder: the
code (the encoder's output) is z_e, and the decoder starts by quantizing it. It taps its input
('input', (B, V, D) for V vectors per example), the chosen codes ('codes', the codebook's rows,
whose gradient reaches the codebook) and their indices ('indices', (B, V)) for the loss terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from aebench.layers.base import (
    MAX_SIZE,
    LayerKind,
    LayerPlan,
    Param,
    Shape,
    Tape,
    Weights,
    Where,
    evaluation_of,
    training_of,
)
from aebench.spec.schema import Parser, greater_than, in_interval, in_range, rule, shown

EMA_SETTINGS = ("decay", "epsilon")


@dataclass(frozen=True)
class VectorQuantizer:
    """Nearest-code quantization of the last axis with ``codes`` codes; the codebook learns by
    gradient (the codebook loss term) or by exponential moving averages (decay, epsilon)."""

    type: Literal["vector_quantizer"]
    codes: int = field(metadata=rule(in_range(1, MAX_SIZE)))
    update: Literal["gradient", "ema"]
    decay: Optional[float] = field(
        default=None, metadata=rule(in_interval(0.0, 1.0, closed_low=True, closed_high=False))
    )
    epsilon: Optional[float] = field(default=None, metadata=rule(greater_than(0.0)))

    @classmethod
    def from_yaml(cls, parser: Parser, value: Any, path: str) -> VectorQuantizer:
        """The fields, then: decay and epsilon with ``update: ema``, and only then."""
        layer = parser.parse_dataclass(cls, value, path)
        for name in EMA_SETTINGS:
            given = getattr(layer, name) is not None
            if layer.update == "ema" and not given:
                parser.fail(f"{path}.{name}", "is required with update: ema (a number: Sonnet's are 0.99 and 1e-5)")
            if layer.update == "gradient" and given:
                parser.fail(f"{path}.{name}", "is only for update: ema (the gradient update has no moving averages)")
        return layer


def plan(layer: VectorQuantizer, shape: Shape, where: Where) -> tuple[Shape, tuple[Param, ...]]:
    if not where.name.startswith("decoder."):
        raise where.error(
            "type",
            "vector_quantizer belongs in model.decoder: it quantizes the code (the encoder's output), "
            "which the decoder then reads",
        )
    if len(shape) not in (1, 2, 3):
        raise where.error(
            "type", f"vector_quantizer needs (D,), (n, D) or (height, width, D) input, got {shown(shape)}"
        )
    k, d = layer.codes, shape[-1]
    ema = layer.update == "ema"
    params = [Param(f"{where.name}.embeddings", (k, d), "embedding", d, k, trainable=not ema)]
    if ema:
        params.append(Param(f"{where.name}.cluster_size", (k,), "count", d, k, trainable=False))
        params.append(Param(f"{where.name}.embedding_sum", (k, d), "sum", d, k, trainable=False))
    return shape, tuple(params)


def distances(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(N, D) vectors and a (K, D) codebook -> (N, K): ||z||^2 - 2 z.e + ||e||^2, added left to right."""
    return (z * z).sum(axis=1, keepdims=True) - 2.0 * (z @ codebook.T) + (codebook * codebook).sum(axis=1)


def nearest(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(N,) the first index of the smallest distance of each vector (np.argmin's tie-break)."""
    return np.argmin(distances(z, codebook), axis=1)


def ema_update(layer: VectorQuantizer, state: Mapping[str, np.ndarray], z: np.ndarray, picked: np.ndarray) -> Weights:
    """The moving averages after one batch of (N, D) vectors z that picked ``picked`` (N,), and the
    codebook they give (the module docstring's rule): {'embeddings', 'cluster_size', 'embedding_sum'}."""
    k, gamma, eps = layer.codes, layer.decay, layer.epsilon
    assert gamma is not None and eps is not None, "update: ema has its settings (from_yaml)"
    one_hot = (picked[:, None] == np.arange(k)[None, :]).astype(z.dtype)
    cluster = gamma * state["cluster_size"] + (1 - gamma) * one_hot.sum(axis=0)
    embed = gamma * state["embedding_sum"] + (1 - gamma) * (one_hot.T @ z)
    n = cluster.sum()
    smoothed = (cluster + eps) / (n + k * eps) * n
    return {"embeddings": embed / smoothed[:, None], "cluster_size": cluster, "embedding_sum": embed}


def taped(
    plan: LayerPlan,
    weights: Weights,
    x: np.ndarray,
    updates: Optional[Weights],
    draws: Mapping[str, np.ndarray],
    tape: Tape,
) -> np.ndarray:
    """The quantized batch (straight through), in evaluation mode or (``updates``) training
    mode; taps 'input', 'codes', 'indices', holds the indices and z_q - z."""
    layer, name = plan.layer, plan.name
    codebook = plan.weight(weights, "embeddings")
    d = codebook.shape[1]
    z = x.reshape(-1, d)
    picked = tape.stop_gradient(f"{name}.indices", nearest(z, codebook))
    codes = codebook[picked]
    out = z + tape.stop_gradient(f"{name}.straight_through", codes - z)
    per_example = (len(x), -1, d)
    tape.tap(name, input=z.reshape(per_example), codes=codes.reshape(per_example), indices=picked.reshape(len(x), -1))
    if updates is not None and layer.update == "ema":
        state = {role: plan.weight(weights, role) for role in ("cluster_size", "embedding_sum")}
        updates.update({f"{name}.{role}": v for role, v in ema_update(layer, state, z, picked).items()})
    return out.reshape(x.shape)


def vectors(plan: LayerPlan) -> int:
    """The vectors quantized per example."""
    return math.prod(plan.in_shape[:-1])


def macs(plan: LayerPlan) -> int:
    """The distances' matmul: every vector against every code."""
    return vectors(plan) * plan.layer.codes * plan.in_shape[-1]


def activation_values(plan: LayerPlan) -> int:
    """The output and the (vectors, K) distances."""
    return math.prod(plan.out_shape) + vectors(plan) * plan.layer.codes


KIND = LayerKind(
    "vector_quantizer",
    VectorQuantizer,
    plan,
    evaluation_of(taped),
    macs=macs,
    activation_values=activation_values,
    train_oracle=training_of(taped),
    taped=taped,
    codes=lambda plan: plan.layer.codes,
)
