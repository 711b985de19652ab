"""What the codebook and commitment terms share (VQ-VAE, van den Oord et al. 2017, equation 3):
the layers that pick codes, the two terms' settings, rules and oracle, and the code-usage
statistics of their quality metrics.

A layer that picks codes (LayerKind.codes: aebench.layers.vector_quantizer) taps its input z_e
('input'), the codes it picked z_q ('codes', rows of its codebook) and their indices
('indices'). With sg the stop-gradient (the value, held constant for differentiation):

    codebook   = sum over the quantizers of reduce((sg(z_e) - z_q)^2)   moves the codes to z_e
    commitment = sum over the quantizers of reduce((z_e - sg(z_q))^2)   keeps z_e near its codes

reduce over each example's V x D values (sum or mean: ``features``), then over the batch (mean
or sum: ``batch``). PyTorch-VAE's VQVAE (models/vq_vae.py) and Sonnet take F.mse_loss / the
mean over every element: features mean, batch mean. Their values are equal; their gradients
are not: the codebook term's reaches only the codebook, the commitment term's only the encoder.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

import numpy as np

from aebench.layers import LayerPlan, Tape, apply_layer, kind_of, walk
from aebench.losses.base import Fail, OracleInputs, QualityInputs, reduce
from aebench.spec.schema import at_least, rule


@dataclass(frozen=True)
class Quantized:
    """weight * the sum over the quantizers of reduce(squared distance between z_e and z_q)."""

    weight: float = field(metadata=rule(at_least(0)))
    features: Literal["sum", "mean"]
    batch: Literal["mean", "sum"]


def quantizers(layers: Iterable[LayerPlan]) -> tuple[LayerPlan, ...]:
    """The planned layers that pick codes (LayerKind.codes), nested ones included, in plan order."""
    return tuple(p for p in walk(layers) if kind_of(p.layer).codes is not None)


def code_count(layer: LayerPlan) -> int:
    """How many codes a quantizer picks from (LayerKind.codes)."""
    codes = kind_of(layer.layer).codes
    assert codes is not None, "a quantizer declares its codes"
    return codes(layer)


def spec_quantizers(spec: Any) -> list[tuple[str, Any]]:
    """(spec path, layer) of each layer of the spec that picks codes, in plan order (before planning)."""

    def visit(layers: Iterable[Any], path: str) -> Iterator[tuple[str, Any]]:
        for i, layer in enumerate(layers):
            if kind_of(layer).codes is not None:
                yield f"{path}[{i}]", layer
            yield from visit(getattr(layer, "layers", ()), f"{path}[{i}].layers")

    return [*visit(spec.model.encoder, "model.encoder"), *visit(spec.model.decoder, "model.decoder")]


def by_gradient(spec: Any) -> list[str]:
    """The spec paths of the quantizers whose codebook learns by gradient (update: gradient)."""
    return [path for path, layer in spec_quantizers(spec) if layer.update == "gradient"]


def common_rules(term: str, spec: Any, fail: Fail) -> None:
    """Both terms: family ae, and a layer that picks codes to read."""
    if spec.model.family != "ae":
        fail(f"loss.{term}", "only allowed for family ae (VQ-VAE quantizes the code itself, which is deterministic)")
    if not spec_quantizers(spec):
        fail(f"loss.{term}", "needs a vector_quantizer layer in model.decoder (it reads that layer's input and codes)")


def squared_distance(cfg: Quantized, inputs: OracleInputs, held: Literal["input", "codes"], term: str) -> float:
    """The docstring's sum, with ``held`` (z_e for the codebook term, z_q for the commitment
    term) held constant for differentiation (the oracle's tape: finite differences replay it)."""
    fwd, total = inputs.forward, 0.0
    for layer in quantizers(inputs.plan.layers):
        taps = dict(fwd.taps[layer.name])
        taps[held] = fwd.tape.stop_gradient(f"loss.{term}.{layer.name}", taps[held])
        total += reduce((taps["input"] - taps["codes"]) ** 2, cfg.features, cfg.batch)
    return total


def decoder_picks(
    plan: Any, weights: dict[str, np.ndarray], code: np.ndarray, labels: Optional[np.ndarray] = None
) -> dict[str, np.ndarray]:
    """The code index each quantizer of the decoder picks for each vector of a batch of codes,
    flat, by canonical layer name: the decoder run in NumPy float64, evaluation mode, on the code
    (with the one-hot labels of a conditional spec) until every quantizer has picked."""
    names = {layer.name for layer in quantizers(plan.decoder)}
    tape = Tape()
    h = np.asarray(code, np.float64)
    if labels is not None:
        h = np.concatenate([h, np.asarray(labels, np.float64)], axis=1)
    for layer in plan.decoder:
        if names <= tape.taps.keys():
            break
        h = apply_layer(layer, weights, h, tape=tape)[1]
    return {name: tape.taps[name]["indices"].ravel() for name in sorted(names)}


def usage(indices: np.ndarray, codes: int) -> np.ndarray:
    """(codes,) how many of the vectors picked each code."""
    return np.bincount(np.asarray(indices, dtype=np.int64).ravel(), minlength=codes)


def perplexity(counts: np.ndarray) -> float:
    """exp(-sum_k p_k log p_k), p the share of the vectors that picked code k (0 log 0 = 0): 1 when
    every vector picks one code, K when all K codes are picked equally often."""
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def quality(cfg: Quantized, inputs: QualityInputs) -> dict[str, float]:
    """test_code_perplexity and test_codes_used: the perplexity of the code usage over every
    vector of the first test examples, and how many codes they picked at least once (one pair
    per quantizer, suffixed by its canonical layer name when the model has more than one)."""
    layers = {layer.name: layer for layer in quantizers(inputs.plan.decoder)}
    picked = decoder_picks(inputs.plan, inputs.weights, inputs.encoded["code"], inputs.labels)
    metrics = {}
    for name, indices in picked.items():
        counts = usage(indices, code_count(layers[name]))
        suffix = f"_{name}" if len(picked) > 1 else ""
        metrics[f"test_code_perplexity{suffix}"] = perplexity(counts)
        metrics[f"test_codes_used{suffix}"] = float((counts > 0).sum())
    return metrics
