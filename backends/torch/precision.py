"""The precision policy in torch (aebench.plugins.bench_api.Precision), set in one place."""

from __future__ import annotations

import torch

from aebench.plugins.bench_api import Precision


def set_precision(precision: Precision) -> None:
    """TensorFloat-32 matmuls and cuDNN convolutions on (precision.tf32) or off (IEEE float32)."""
    torch.backends.cuda.matmul.allow_tf32 = precision.tf32
    torch.backends.cudnn.allow_tf32 = precision.tf32
