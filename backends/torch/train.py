"""Training in torch: the reference Adam (aebench.plugins.adam) or torch.optim.Adam / AdamW with
ExponentialLR (stock), data on the device."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import numpy as np
import torch

from aebench.plugins.adam import adam_scalars, coupled_decay, decoupled_decay, epoch_steps, schedule_period
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.types import Adam, Spec

from .losses import loss_terms
from .model import Autoencoder


class ReferenceAdam:
    """aebench's reference Adam, op for op as torch.optim.Adam's (decoupled: AdamW's) single-tensor path."""

    def __init__(self, params: list[torch.nn.Parameter], opt: Adam, steps_per_epoch: Optional[int] = None):
        self.params, self.opt = params, opt
        self.scalars = adam_scalars(opt, steps_per_epoch)
        self.coupled, self.decoupled = coupled_decay(opt), decoupled_decay(opt) != 0.0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor]) -> None:
        s = next(self.scalars)
        self.update(grads, s.step_size, s.bias_correction2_sqrt, s.decay_factor)

    @torch.no_grad()
    def update(
        self,
        grads: list[torch.Tensor],
        step_size: float | torch.Tensor,
        bias_correction2_sqrt: float | torch.Tensor,
        decay_factor: float | torch.Tensor = 1.0,
    ) -> None:
        """One update with the given scalars: Python floats (``step``) or 0-d device tensors
        (the benchmark modes, which index them on the device with a step counter)."""
        b1, b2 = self.opt.beta1, self.opt.beta2
        on_device = isinstance(step_size, torch.Tensor)
        neg_step_size = -step_size
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            if self.coupled:
                g = g.add(p, alpha=self.coupled)
            if self.decoupled:
                p.mul_(decay_factor)
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.opt.epsilon)
            if on_device:  # addcdiv's value must be a number; (value * m) / denom is its own order
                p.addcdiv_(m * neg_step_size, denom)
            else:
                p.addcdiv_(m, denom, value=neg_step_size)


class StockAdam:
    """torch.optim.Adam (coupled decay: its weight_decay) or torch.optim.AdamW (decoupled) with
    the spec's hyperparameters, and ExponentialLR stepped after each period (recorded as 'stock')."""

    def __init__(
        self,
        params: list[torch.nn.Parameter],
        opt: Adam,
        capturable: bool = False,
        steps_per_epoch: Optional[int] = None,
    ):
        self.params = params
        decoupled = decoupled_decay(opt)
        optimizer = torch.optim.AdamW if decoupled else torch.optim.Adam
        self.inner = optimizer(
            params,
            lr=opt.learning_rate,
            betas=(opt.beta1, opt.beta2),
            eps=opt.epsilon,
            weight_decay=decoupled or coupled_decay(opt),
            amsgrad=False,
            capturable=capturable,
        )
        self.period = schedule_period(opt, steps_per_epoch)
        self.scheduler = None
        if opt.schedule is not None:
            self.scheduler = torch.optim.lr_scheduler.ExponentialLR(self.inner, gamma=opt.schedule.gamma)
        self.count = 0

    def step(self, grads: list[torch.Tensor]) -> None:
        for p, g in zip(self.params, grads):
            p.grad = g
        self.inner.step()
        self.count += 1
        if self.scheduler is not None and self.count % self.period == 0:
            self.scheduler.step()


def make_optimizer(
    params: list[torch.nn.Parameter], opt: Adam, capturable: bool = False, steps_per_epoch: Optional[int] = None
):
    """The spec's Adam; ``capturable`` keeps the stock Adam's step count on the device (CUDA
    graphs); ``steps_per_epoch`` is the period of a per-epoch schedule."""
    if opt.implementation == "reference":
        return ReferenceAdam(params, opt, steps_per_epoch)
    return StockAdam(params, opt, capturable=capturable, steps_per_epoch=steps_per_epoch)


class TorchTrainer:
    """Keeps the training data on the model's device; one step = loss, grads, update.
    ``steps_per_epoch`` (default: the training loop's epoch of x) paces a per-epoch schedule."""

    def __init__(
        self,
        model: Autoencoder,
        spec: Spec,
        x: np.ndarray,
        labels: Optional[np.ndarray],
        device: torch.device,
        dtype: torch.dtype,
        steps_per_epoch: Optional[int] = None,
    ):
        self.model, self.spec, self.device, self.dtype = model, spec, device, dtype
        self.x = torch.as_tensor(x, dtype=dtype, device=device)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=dtype, device=device)
        self.params = list(model.parameters())
        period = steps_per_epoch or epoch_steps(len(x), spec.train.batch_size)
        self.optimizer = make_optimizer(self.params, spec.optimizer, steps_per_epoch=period)
        self.names = loss_term_names(spec)

    def _tensor(self, array: Optional[np.ndarray]) -> Optional[torch.Tensor]:
        return None if array is None else torch.as_tensor(array, dtype=self.dtype).to(self.device, non_blocking=True)

    def run(self, steps: Iterable[Step]) -> np.ndarray:
        """Training-mode steps: batch statistics, running statistics updated in the forward
        pass, the steps' layer draws (dropout masks)."""
        self.model.train()
        rows = []
        for step in steps:
            idx = torch.as_tensor(step.indices, device=self.device)
            labels = None if self.labels is None else self.labels[idx]
            terms = loss_terms(
                self.model,
                self.spec,
                self.x[idx],
                labels,
                self._tensor(step.noise.eps),
                self._tensor(step.noise.corruption),
                {name: self._tensor(draw) for name, draw in step.noise.draws.items()},
            )
            grads = torch.autograd.grad(terms["total"], self.params)
            self.optimizer.step(grads)
            rows.append(torch.stack([terms[n].detach() for n in self.names]))
        if not rows:
            return np.zeros((0, len(self.names)))
        return torch.stack(rows).to(torch.float64).cpu().numpy()
