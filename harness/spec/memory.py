"""What one training step of a spec holds in memory, estimated from its plan, and the check
that it fits this machine (`aebench validate` prints it; loading a spec enforces it)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

from aebench.errors import SpecError
from aebench.spec.shapes import LayerPlan, ModelPlan, plan_model
from aebench.spec.types import Dense, Spec

BYTES_PER_VALUE = {"float32": 4, "float64": 8}

FALLBACK_MEMORY_BYTES = 1 << 40
"""The memory assumed where the operating system does not say how much it has."""


@dataclass(frozen=True)
class MemoryNeed:
    """What one training step of a spec holds in memory, in bytes of its dtype (an estimate from below).

    Parameters count four times (the weights, their gradients, Adam's two moments); activations
    twice (every layer's output at the spec's batch size, kept for the backward pass, and its
    gradient). The data set, framework workspaces and the allocator's slack come on top.
    """

    dtype: str
    batch_size: int
    weights: int
    activations_per_example: int

    @property
    def parameter_bytes(self) -> int:
        return 4 * self.weights * BYTES_PER_VALUE[self.dtype]

    @property
    def activation_bytes(self) -> int:
        return 2 * self.activations_per_example * self.batch_size * BYTES_PER_VALUE[self.dtype]

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.activation_bytes

    def describe(self) -> str:
        """'needs about 1.7 MB of memory in float32 (...)', for `aebench validate` and errors."""
        return (
            f"needs about {human_bytes(self.total_bytes)} of memory in {self.dtype} "
            f"({human_bytes(self.parameter_bytes)} for weights, gradients and Adam state, "
            f"{human_bytes(self.activation_bytes)} for activations at batch {self.batch_size})"
        )


def memory_need(spec: Spec, plan: Optional[ModelPlan] = None, batch_size: Optional[int] = None) -> MemoryNeed:
    """The memory a training step of ``spec`` holds (see MemoryNeed), at its batch size unless given."""
    plan = plan or plan_model(spec)
    per_example = math.prod(plan.data_shape) + plan.label_size
    per_example += sum(math.prod(layer.out_shape) for layer in plan.layers)
    if spec.model.family == "vae":
        per_example += 2 * plan.latent_size  # the noise and z
    weights = sum(math.prod(p.shape) for p in plan.params)
    return MemoryNeed(spec.dtype, batch_size or spec.train.batch_size, weights, per_example)


def physical_memory_bytes() -> int:
    """This machine's physical memory (FALLBACK_MEMORY_BYTES where the system does not tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return FALLBACK_MEMORY_BYTES


def check_memory_fits(spec: Spec, file: str, plan: Optional[ModelPlan] = None) -> MemoryNeed:
    """The spec's MemoryNeed, or a SpecError naming the field to shrink when it exceeds physical memory."""
    plan = plan or plan_model(spec, file)
    need = memory_need(spec, plan)
    available = physical_memory_bytes()
    if need.total_bytes <= available:
        return need
    fits_one_example = memory_need(spec, plan, batch_size=1).total_bytes <= available
    field = "train.batch_size" if fits_one_example else _largest_size_field(plan)
    raise SpecError(file, field, f"the spec {need.describe()}; this machine has {human_bytes(available)} of memory")


def _largest_size_field(plan: ModelPlan) -> str:
    """The field that sets the largest output of a layer with weights (or the label size): the one to shrink."""
    candidates = [(plan.label_size, "model.conditioning.num_classes")]
    for layer in plan.layers:
        if layer.params:
            candidates.append((math.prod(layer.out_shape), _size_field(layer)))
    return max(candidates, key=lambda candidate: candidate[0])[1]


def _size_field(layer: LayerPlan) -> str:
    stack, _, index = layer.name.partition(".")
    if stack not in ("encoder", "decoder"):
        return "model.latent.size"
    path = f"model.{stack}[{index}]"
    return f"{path}.units" if isinstance(layer.layer, Dense) else path


def human_bytes(count: int) -> str:
    """A byte count in decimal units: '1.7 MB', '25.1 TB'; beyond an exabyte, its power of ten."""
    if count >= 10**18:
        return f"about 10^{int((count.bit_length() - 1) * math.log10(2))} bytes"
    value = float(count)
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if value < 1000 or unit == "PB":
            return f"{value:,.0f} {unit}" if unit == "bytes" else f"{value:,.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
