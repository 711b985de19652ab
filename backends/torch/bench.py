"""Benchmark modes of the PyTorch backend (aebench.plugins.bench_api).

Imports torch only inside ``prepare`` (the runners live in bench_runners.py), so the harness
can read MODES and ask ``unsupported`` without loading the framework.
"""

from __future__ import annotations

import sys

from aebench.errors import AebenchError
from aebench.plugins.bench_api import BenchData, Precision, StepRunner, require_mode
from aebench.spec.types import Spec

MODES = {
    "eager": "PyTorch eager: batch gather, forward, torch.autograd.grad and the Adam update op by op, "
    "one step per call",
    "compiled": "torch.compile (inductor, default mode) of the forward with its loss (AOTAutograd compiles "
    "the backward) and of the Adam update, one step per call",
    "fast": "the compiled mode's step (torch.compile'd forward with loss, AOTAutograd backward, inductor-fused "
    "Adam; batch from a device step counter) captured once in a CUDA graph (torch.cuda.CUDAGraph), "
    "steps_per_call steps per replay",
}


def unsupported(backend, mode: str) -> str:
    """Why ``mode`` cannot run on the backend's device; "" if it can."""
    require_mode(MODES, mode)
    if mode == "fast" and not backend.device().startswith("cuda"):
        return "CUDA graphs need a CUDA device"
    return ""


def prepare(backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int) -> StepRunner:
    """A runner for ``mode``: the model built in the spec's dtype with ``data.weights``, every
    array of ``data`` on the device, at the process's precision (applied when the backend
    loaded); no step taken yet."""
    reason = unsupported(backend, mode)
    if reason:
        raise AebenchError(f"torch mode {mode!r} cannot run here: {reason}")
    from .bench_runners import make_runner

    return make_runner(backend, spec, mode, data, precision, steps_per_call)


def thread_pools() -> dict[str, int]:
    """torch's intra- and inter-op thread pools, if torch is loaded in this process."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "get_num_threads"):
        return {}
    return {"torch.intra_op": torch.get_num_threads(), "torch.inter_op": torch.get_num_interop_threads()}
