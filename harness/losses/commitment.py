"""commitment: VQ-VAE's commitment loss ||z_e - sg(z_q)||^2 (van den Oord et al. 2017, equation
3, its third term; weight beta, 0.25 in the paper and PyTorch-VAE), which keeps the encoder's
output near the codes it picks; family ae, with a vector_quantizer, which requires it
(aebench.losses._quantizers states the sum and the reductions).

Its quality metrics: the perplexity of the test split's code usage and the number of codes it
uses (aebench.losses._quantizers.quality).
"""

from __future__ import annotations

from typing import Any

from aebench.losses._quantizers import Quantized, common_rules, quality, spec_quantizers, squared_distance
from aebench.losses.base import Fail, LossTerm, OracleInputs


def oracle(cfg: Quantized, inputs: OracleInputs) -> float:
    return squared_distance(cfg, inputs, "codes", "commitment")


def rules(cfg: Quantized, spec: Any, fail: Fail) -> None:
    common_rules("commitment", spec, fail)


def required(spec: Any) -> str:
    paths = [path for path, _ in spec_quantizers(spec)]
    return f"{paths[0]} quantizes the code; this term keeps the encoder's output near its codes" if paths else ""


TERM = LossTerm(
    "commitment",
    Quantized,
    rank=11,
    weight=lambda cfg: cfg.weight,
    oracle=oracle,
    rules=rules,
    required=required,
    quality=quality,
)
