"""The torch StepRunners of bench.py: the backend trainer's step on device-resident data.

Every mode computes what TorchTrainer computes (losses.loss_terms' total, torch.autograd.grad,
the spec's Adam from train.py); only the batch and the reference Adam's scalars come from
tensors uploaded once and indexed by a step counter, so no step copies host -> device.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from torch import Tensor

from aebench.errors import AebenchError
from aebench.plugins.bench_api import BenchData, Precision
from aebench.spec.types import Spec

from .losses import loss_terms
from .model import Autoencoder
from .train import ReferenceAdam, make_optimizer

StepIndex = Union[int, Tensor]  # a Python int (eager) or a (1,) int64 device counter
CUDA_GRAPH_WARMUP_STEPS = 3  # torch.cuda.graphs docs: a few eager iterations on a side stream first


def pick(array: Optional[Tensor], index: StepIndex) -> Optional[Tensor]:
    """``array[index]``: a view for a Python int, an index_select for a device counter (no sync)."""
    if array is None:
        return None
    return array[index] if isinstance(index, int) else array.index_select(0, index)[0]


class DeviceData:
    """A BenchData on the device: training set, batch order, noise and Adam scalars."""

    def __init__(self, data: BenchData, device: torch.device, dtype: torch.dtype):
        def upload(array, as_dtype=dtype):
            return None if array is None else torch.as_tensor(np.asarray(array), dtype=as_dtype, device=device)

        self.x, self.labels = upload(data.x), upload(data.labels)
        self.order = upload(data.order, torch.int64)
        self.eps, self.corruption = upload(data.eps), upload(data.corruption)
        self.draws = {name: upload(draw) for name, draw in data.draws.items()}
        self.step_size = upload(data.adam_step_size)
        self.bias_correction2_sqrt = upload(data.adam_bias_correction2_sqrt)
        self.decay_factor = upload(data.adam_decay_factor)
        self.steps_per_epoch = data.steps_per_epoch
        self.n_batches, self.max_steps = len(data.order), data.max_steps

    def batch(
        self, k: StepIndex
    ) -> tuple[Tensor, Optional[Tensor], Optional[Tensor], Optional[Tensor], dict[str, Optional[Tensor]]]:
        """x, labels, eps, corruption and the layers' draws of step k (batch k mod n)."""
        j = k % self.n_batches
        indices = pick(self.order, j)
        labels = None if self.labels is None else self.labels.index_select(0, indices)
        draws = {name: pick(draw, j) for name, draw in self.draws.items()}
        return self.x.index_select(0, indices), labels, pick(self.eps, j), pick(self.corruption, j), draws

    def adam_scalars(self, k: StepIndex) -> tuple[Tensor, Tensor, Tensor]:
        """The reference Adam's step size, sqrt(1 - beta2^t) and decoupled decay factor of step k (t = k + 1)."""
        return pick(self.step_size, k), pick(self.bias_correction2_sqrt, k), pick(self.decay_factor, k)


class TrainingStep:
    """The trainer's step, split where torch.compile wants it: the loss, then the update."""

    def __init__(self, model: Autoencoder, spec: Spec, data: DeviceData, capturable: bool = False):
        self.model, self.spec, self.data = model, spec, data
        self.params = list(model.parameters())
        self.optimizer = make_optimizer(
            self.params, spec.optimizer, capturable=capturable, steps_per_epoch=data.steps_per_epoch
        )

    def loss(self, k: StepIndex) -> Tensor:
        """The total loss of step k, before the update (graph kept for autograd.grad)."""
        return loss_terms(self.model, self.spec, *self.data.batch(k))["total"]

    def update(self, grads: list[Tensor], k: StepIndex) -> None:
        """The spec's Adam: reference (scalars of step k from the device) or stock."""
        if isinstance(self.optimizer, ReferenceAdam):
            self.optimizer.update(grads, *self.data.adam_scalars(k))
        else:
            self.optimizer.step(grads)

    def state_tensors(self) -> list[Tensor]:
        """The optimizer's state (Adam: moments and step count, all zero before step 1)."""
        if isinstance(self.optimizer, ReferenceAdam):
            return self.optimizer.m + self.optimizer.v
        return [t for state in self.optimizer.inner.state.values() for t in state.values() if torch.is_tensor(t)]


class Runner:
    """What every mode shares: the step count, sync, losses and peak memory."""

    steps_per_call = 1

    def __init__(self, step: TrainingStep):
        self.step, self.steps_taken = step, 0
        self.device = step.params[0].device
        self.on_cuda = self.device.type == "cuda"

    def _advance(self) -> int:
        """The index of the next step, after checking the data has its Adam scalars."""
        k = self.steps_taken
        if k + self.steps_per_call > self.step.data.max_steps:
            raise AebenchError(
                f"the bench data holds {self.step.data.max_steps} steps; this call would "
                f"take steps {k + 1} to {k + self.steps_per_call} (make it with a larger max_steps)"
            )
        self.steps_taken += self.steps_per_call
        return k

    def wait(self, handle: object) -> None:
        if self.on_cuda:
            torch.cuda.synchronize(self.device)  # CPU ops run synchronously

    def losses(self, handles: list) -> np.ndarray:
        if not handles:
            return np.zeros(0)
        return torch.stack(handles).to(torch.float64).cpu().numpy()

    def peak_memory_bytes(self) -> Optional[int]:
        return torch.cuda.max_memory_allocated(self.device) if self.on_cuda else None


class EagerRunner(Runner):
    """Op by op; the step index is a Python int (views of the device arrays, no copies)."""

    def dispatch(self) -> Tensor:
        k = self._advance()
        loss = self.step.loss(k)
        self.step.update(torch.autograd.grad(loss, self.step.params), k)
        return loss.detach()


def compile_cold(fn):
    """torch.compile(fn) (inductor, default mode), compiled from scratch in this process."""
    # Every runner compiles the same code objects: without a reset, dynamo's per-code
    # recompile limit would silently run later runners of one process eagerly.
    torch._dynamo.reset()
    # Inductor's on-disk caches would turn the compile time of a later run into a cache
    # read (46 s -> 5 s measured); the reported compile time is the cold one.
    torch._inductor.config.force_disable_caches = True
    return torch.compile(fn)


class CompiledRunner(Runner):
    """torch.compile'd loss (forward and, through AOTAutograd, backward) and update; the step
    counter is a device tensor so that nothing changes between calls (no recompiles)."""

    def __init__(self, step: TrainingStep):
        super().__init__(step)
        self.k = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.compiled_loss = compile_cold(step.loss)
        self.compiled_update = torch.compile(self._update_and_count)

    def _update_and_count(self, grads: list[Tensor], k: Tensor) -> None:
        self.step.update(grads, k)
        k.add_(1)

    def dispatch(self) -> Tensor:
        self._advance()
        loss = self.compiled_loss(self.k)
        self.compiled_update(torch.autograd.grad(loss, self.step.params), self.k)
        return loss.detach()


class CudaGraphRunner(Runner):
    """``steps_per_call`` whole steps captured in one CUDA graph on the first dispatch and
    replayed; the device step counter advances inside the graph, which writes each step's
    loss to a device log. A handle is the index of the call's first step.

    The captured step is the compiled one (the ``compiled`` mode's torch.compile'd loss, its
    AOTAutograd backward and the inductor-fused Adam update), compiled during the warm-up
    steps that precede the capture, so the graph replays fused kernels with no Python,
    dispatcher or launch overhead between them.
    """

    def __init__(self, step: TrainingStep, steps_per_call: int):
        super().__init__(step)
        self.steps_per_call = steps_per_call
        self.loss_of_step = compile_cold(step.loss)
        self.update_of_step = torch.compile(step.update)
        self.k = torch.zeros(1, dtype=torch.int64, device=self.device)
        self.loss_log = torch.zeros(step.data.max_steps, dtype=step.params[0].dtype, device=self.device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None

    def _train(self, n_steps: int) -> None:
        for _ in range(n_steps):
            loss = self.loss_of_step(self.k)
            self.loss_log.index_copy_(0, self.k, loss.detach().reshape(1))
            self.update_of_step(torch.autograd.grad(loss, self.step.params), self.k)
            self.k.add_(1)

    @torch.no_grad()
    def _reset(self, initial_params: list[Tensor]) -> None:
        """Back to the prepared state after the warm-up steps (Adam's state starts at zero)."""
        for p, initial in zip(self.step.params, initial_params):
            p.copy_(initial)
            p.grad = None
        for t in self.step.state_tensors():
            t.zero_()
        self.k.zero_()
        self.loss_log.zero_()

    def _capture(self) -> torch.cuda.CUDAGraph:
        initial_params = [p.detach().clone() for p in self.step.params]
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(CUDA_GRAPH_WARMUP_STEPS):
                self.k.zero_()
                self._train(1)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._reset(initial_params)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=side):  # the warm-up's stream: its cuBLAS handles exist
            self._train(self.steps_per_call)
        return graph

    def dispatch(self) -> int:
        if self.graph is None:
            self.graph = self._capture()  # records only: the state is still the prepared one
        first = self._advance()
        self.graph.replay()
        return first

    def losses(self, handles: list) -> np.ndarray:
        log = self.loss_log.to(torch.float64).cpu().numpy()
        return np.concatenate([log[h : h + self.steps_per_call] for h in handles] or [np.zeros(0)])


def make_runner(backend, spec: Spec, mode: str, data: BenchData, precision: Precision, steps_per_call: int) -> Runner:
    """bench.prepare's work, once torch may be imported, at the process's precision (``precision``
    names it: it was applied when the backend loaded)."""
    opt = spec.optimizer
    if opt.implementation == "stock" and opt.schedule is not None and mode != "eager":
        raise AebenchError(
            f"torch mode {mode!r} cannot run a stock Adam with a learning-rate schedule: ExponentialLR "
            "changes a Python float that torch.compile and CUDA graphs bake in; use mode eager or "
            "optimizer.implementation reference"
        )
    model = backend.build(spec)
    backend.set_weights(model, data.weights)
    first = next(model.parameters())
    step = TrainingStep(model, spec, DeviceData(data, first.device, first.dtype), capturable=mode == "fast")
    runner = {
        "eager": lambda: EagerRunner(step),
        "compiled": lambda: CompiledRunner(step),
        "fast": lambda: CudaGraphRunner(step, steps_per_call),
    }[mode]()
    if runner.on_cuda:
        torch.cuda.synchronize(runner.device)
        torch.cuda.reset_peak_memory_stats(runner.device)
    return runner
