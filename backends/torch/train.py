"""Training in torch: the reference Adam (aebench.plugins.adam) or torch.optim.Adam, data on the device."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Optional

import numpy as np
import torch

from aebench.plugins.adam import adam_scalars
from aebench.plugins.backend_api import Step, loss_term_names
from aebench.spec.types import Adam, Spec

from .losses import loss_terms
from .model import Autoencoder


class ReferenceAdam:
    """aebench's reference Adam, op for op as torch.optim.Adam's single-tensor path."""

    def __init__(self, params: list[torch.nn.Parameter], opt: Adam):
        self.params, self.opt, self.step_count = params, opt, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    def step(self, grads: list[torch.Tensor]) -> None:
        self.step_count += 1
        s = adam_scalars(self.opt, self.step_count)
        self.update(grads, s.step_size, s.bias_correction2_sqrt)

    @torch.no_grad()
    def update(
        self, grads: list[torch.Tensor], step_size: float | torch.Tensor, bias_correction2_sqrt: float | torch.Tensor
    ) -> None:
        """One update with the given scalars: Python floats (``step``) or 0-d device tensors
        (the benchmark modes, which index them on the device with a step counter)."""
        b1, b2 = self.opt.beta1, self.opt.beta2
        on_device = isinstance(step_size, torch.Tensor)
        neg_step_size = -step_size
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            m.lerp_(g, 1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / bias_correction2_sqrt).add_(self.opt.epsilon)
            if on_device:  # addcdiv's value must be a number; (value * m) / denom is its own order
                p.addcdiv_(m * neg_step_size, denom)
            else:
                p.addcdiv_(m, denom, value=neg_step_size)


class StockAdam:
    """torch.optim.Adam with the spec's hyperparameters (recorded as 'stock')."""

    def __init__(self, params: list[torch.nn.Parameter], opt: Adam, capturable: bool = False):
        self.params = params
        self.inner = torch.optim.Adam(
            params,
            lr=opt.learning_rate,
            betas=(opt.beta1, opt.beta2),
            eps=opt.epsilon,
            weight_decay=0.0,
            amsgrad=False,
            capturable=capturable,
        )

    def step(self, grads: list[torch.Tensor]) -> None:
        for p, g in zip(self.params, grads):
            p.grad = g
        self.inner.step()


def make_optimizer(params: list[torch.nn.Parameter], opt: Adam, capturable: bool = False):
    """The spec's Adam; ``capturable`` keeps the stock Adam's step count on the device (CUDA graphs)."""
    if opt.implementation == "reference":
        return ReferenceAdam(params, opt)
    return StockAdam(params, opt, capturable=capturable)


class TorchTrainer:
    """Keeps the training data on the model's device; one step = loss, grads, update."""

    def __init__(
        self,
        model: Autoencoder,
        spec: Spec,
        x: np.ndarray,
        labels: Optional[np.ndarray],
        device: torch.device,
        dtype: torch.dtype,
    ):
        self.model, self.spec, self.device, self.dtype = model, spec, device, dtype
        self.x = torch.as_tensor(x, dtype=dtype, device=device)
        self.labels = None if labels is None else torch.as_tensor(labels, dtype=dtype, device=device)
        self.params = list(model.parameters())
        self.optimizer = make_optimizer(self.params, spec.optimizer)
        self.names = loss_term_names(spec)

    def _tensor(self, array: Optional[np.ndarray]) -> Optional[torch.Tensor]:
        return None if array is None else torch.as_tensor(array, dtype=self.dtype).to(self.device, non_blocking=True)

    def run(self, steps: Iterable[Step]) -> np.ndarray:
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
            )
            grads = torch.autograd.grad(terms["total"], self.params)
            self.optimizer.step(grads)
            rows.append(torch.stack([terms[n].detach() for n in self.names]))
        if not rows:
            return np.zeros((0, len(self.names)))
        return torch.stack(rows).to(torch.float64).cpu().numpy()
