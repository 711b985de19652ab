"""The contract between the timing harness and a backend's benchmark modes.

A backend that can be benchmarked has a ``bench`` module (``backends/<name>/bench.py``, the
same name in every backend folder) that imports its framework only inside its functions
(so the harness can read its modes without it), with:

- ``MODES: dict[str, str]``: the modes of MODE_NAMES, name -> what the mode does in this
  framework (recorded in the results): ``eager`` (op by op, no compilation), ``compiled``
  (one compiled training step per call: torch.compile, jax.jit,
  tf.function(jit_compile=True)) and ``fast`` (the framework's fastest known practice:
  several steps per dispatch with lax.scan or a compiled loop, CUDA graphs for torch).
- ``unsupported(backend, mode) -> str``: why the mode cannot run on the loaded backend's
  device ("" if it can), e.g. CUDA graphs on a CPU.
- ``prepare(backend, spec, mode, data, precision, steps_per_call) -> StepRunner``: builds the
  model in the spec's dtype (``backend`` is the loaded Backend), loads ``data.weights``, puts
  every array of ``data`` on the device once and returns a runner. ``precision`` is what the
  process runs at, already applied when the backend loaded (aebench.plugins.precision): the
  runner must not set it again.
  ``steps_per_call`` is how many steps a multi-step mode (``fast`` by lax.scan or a compiled
  loop) takes per dispatch; one-step modes ignore it and report 1. No training step may run
  before the harness asks for one, so the first dispatch includes the compilation.
- The spec's optimizer is used as declared: ``reference`` (aebench's Adam, scalars from
  ``data``) or ``stock`` (the framework's own Adam, and its own schedule with a period of
  ``data.steps_per_epoch`` updates for a ``per: epoch`` schedule).

Everything is on the device before the first step: the training images, the batch order and
the noise of every batch (drawn in NumPy, identical for every framework). Step ``k`` uses
``order[k % n]``, ``eps[k % n]`` and ``corruption[k % n]`` with ``n = len(data.order)``, and the
reference Adam's scalars of step ``k + 1`` (``data.adam_step_size[k]``,
``data.adam_bias_correction2_sqrt[k]``, ``data.adam_decay_factor[k]``), so every framework does
the same work on the same numbers and their loss curves can be overlaid. The layers' draws
(dropout masks) follow the same rule: step ``k`` uses ``draws[name][k % n]`` for each layer
``name`` of ``data.draws``. A bench has no epochs of its own: a ``per: epoch`` schedule steps
every ``data.steps_per_epoch`` updates, the training epoch of the cell's batch size
(aebench.plugins.adam.epoch_steps), already in the step sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Optional, Protocol, get_args

import numpy as np

from aebench.errors import AebenchError
from aebench.plugins.backend_api import Weights

MODE_NAMES = ("eager", "compiled", "fast")


def require_mode(modes: dict[str, str], mode: str) -> None:
    """AebenchError naming the allowed modes unless ``mode`` is one of ``modes``."""
    if mode not in modes:
        raise AebenchError(f"mode '{mode}' is not a benchmark mode; allowed: {', '.join(modes)}")


def require_steps_per_call(mode: str, steps_per_call: int) -> None:
    """AebenchError unless a multi-step mode takes at least one step per call."""
    if mode == "fast" and steps_per_call < 1:
        raise AebenchError(f"steps_per_call must be at least 1 for mode 'fast', got {steps_per_call}")


PrecisionName = Literal["ieee-fp32", "tf32"]
PRECISION_NAMES: tuple[str, ...] = get_args(PrecisionName)
"""The precision policies, as results record them (``Precision.describe``)."""


@dataclass(frozen=True)
class Precision:
    """The precision policy of a process: set once, before any backend loads, applied alike in
    every framework and read back (aebench.plugins.precision).

    ``ieee-fp32`` (the default): float32 matmuls and convolutions in IEEE float32 (torch
    allow_tf32 off, jax matmul precision 'highest', TF enable_tensor_float_32_execution(False)).
    ``tf32``: TensorFloat-32 allowed everywhere (torch allow_tf32 on, jax precision
    'tensorfloat32', TF32 execution on). Only Ampere and later GPUs have TF32; elsewhere the
    switches are set and read back all the same, and change nothing.
    """

    name: PrecisionName = "ieee-fp32"

    def __post_init__(self) -> None:
        if self.name not in PRECISION_NAMES:
            raise AebenchError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {self.name!r}")

    @property
    def tf32(self) -> bool:
        """Whether TensorFloat-32 is allowed (results record it as ``precision.tf32``)."""
        return self.name == "tf32"

    def describe(self) -> str:
        """The name results record: in cell keys, peak-cache keys, rows and MLflow params."""
        return self.name

    @classmethod
    def from_json(cls, raw: object) -> Precision:
        """A Precision as ``dataclasses.asdict`` writes it (``{"name": "tf32"}``), a bare name, or
        the older ``{"tf32": true}`` of cells written before the policy had a name."""
        if isinstance(raw, str):
            return cls(raw)  # type: ignore[arg-type]  # __post_init__ refuses an unknown name
        if isinstance(raw, dict) and set(raw) == {"tf32"} and isinstance(raw["tf32"], bool):
            return cls("tf32" if raw["tf32"] else "ieee-fp32")
        if isinstance(raw, dict) and set(raw) == {"name"}:
            return cls(raw["name"])
        raise AebenchError(f"precision must be one of {', '.join(PRECISION_NAMES)}, got {str(raw)[:60]!r}")

    @classmethod
    def from_yaml(cls, parser, value: object, path: str) -> Precision:
        """A campaign YAML's ``precision: tf32`` (aebench.spec.schema.Parser)."""
        if not (isinstance(value, str) and value in PRECISION_NAMES):
            parser.fail(path, f"must be one of {', '.join(PRECISION_NAMES)}; got {str(value)[:60]!r}")
        return cls(value)  # type: ignore[arg-type]  # one of PRECISION_NAMES


@dataclass(frozen=True)
class BenchData:
    """What one benchmark cell trains on, all NumPy, copied to the device by ``prepare``.

    x: (N, *data_shape) training examples in the spec's dtype; labels: (N, classes) one-hot
    or None; order: (n, B) int32 batch indices; eps: (n, *one batch's Noise.eps shape) or None; corruption:
    (n, B, *data_shape) or None; weights: the canonical initial weights; adam_step_size,
    adam_bias_correction2_sqrt and adam_decay_factor: (max_steps,) the reference Adam's scalars
    per step (aebench.plugins.adam.AdamScalars); steps_per_epoch: the period of a per-epoch
    schedule (the stock optimizers' own schedules count it); draws: (n, *one batch's shape) the
    uniform draws of each layer that takes one (Noise.draws), by canonical layer name, and
    (n, *one batch's shape) the draws of each loss term that takes them, by
    aebench.losses.base.draw_key, and family categorical's temperatures (n,), pool batch j's
    that of training step j (aebench.bench.data); empty for a spec without such layers or terms.
    """

    x: np.ndarray
    labels: Optional[np.ndarray]
    order: np.ndarray
    eps: Optional[np.ndarray]
    corruption: Optional[np.ndarray]
    weights: Weights
    adam_step_size: np.ndarray
    adam_bias_correction2_sqrt: np.ndarray
    adam_decay_factor: np.ndarray
    steps_per_epoch: int
    draws: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        return int(self.order.shape[1])

    @property
    def max_steps(self) -> int:
        return len(self.adam_step_size)


class StepRunner(Protocol):
    """Training steps of one (spec, backend, mode), dispatched by the harness."""

    steps_per_call: int
    """How many training steps one ``dispatch`` takes (1, or K for a scanned loop)."""

    def dispatch(self) -> object:
        """Launch the next ``steps_per_call`` steps without waiting for them; returns a handle
        on their total losses (device values, not yet read)."""

    def wait(self, handle: object) -> None:
        """Block until the steps of ``handle`` and everything launched before it have
        finished on the device (torch.cuda.synchronize, jax.block_until_ready, TF sync)."""

    def losses(self, handles: list) -> np.ndarray:
        """The total loss of every step of ``handles``, in order, as float64 on the host."""

    def peak_memory_bytes(self) -> Optional[int]:
        """Peak device memory since the runner was prepared; None where the framework cannot
        tell (then the harness reports the process' peak resident memory on CPU)."""
