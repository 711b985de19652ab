"""codebook: VQ-VAE's codebook loss ||sg(z_e) - z_q||^2 (van den Oord et al. 2017, equation 3,
its second term), which moves the picked codes toward the encoder's output; family ae, with a
vector_quantizer whose codebook learns by gradient (aebench.losses._quantizers states the sum
and the reductions).

Required by such a quantizer (its codebook has no other gradient: the straight-through output
passes none to it), and not allowed with ``update: ema``, whose moving averages move the
codebook instead (the paper's appendix A.1: the codebook term is then left out).
"""

from __future__ import annotations

from typing import Any

from aebench.losses._quantizers import Quantized, by_gradient, common_rules, spec_quantizers, squared_distance
from aebench.losses.base import Fail, LossTerm, OracleInputs


def oracle(cfg: Quantized, inputs: OracleInputs) -> float:
    return squared_distance(cfg, inputs, "input", "codebook")


def rules(cfg: Quantized, spec: Any, fail: Fail) -> None:
    common_rules("codebook", spec, fail)
    moving = [path for path, layer in spec_quantizers(spec) if layer.update == "ema"]
    if moving:
        fail(
            "loss.codebook",
            f"is not used with update: ema ({moving[0]} moves its codebook by moving averages); remove loss.codebook",
        )


def required(spec: Any) -> str:
    paths = by_gradient(spec)
    return f"{paths[0]} learns its codebook by gradient, which only this term gives" if paths else ""


TERM = LossTerm(
    "codebook", Quantized, rank=10, weight=lambda cfg: cfg.weight, oracle=oracle, rules=rules, required=required
)
