"""The precision policy in torch (aebench.plugins.bench_api.Precision), set in one place.

``apply_precision`` is called once per process, right after the backend loads
(aebench.plugins.precision); nothing else sets these switches. torch leaves TF32 on for cuDNN
convolutions by default, so ieee-fp32 switches both off.
"""

from __future__ import annotations

import torch

from aebench.plugins.bench_api import Precision


def apply_precision(precision: Precision) -> dict[str, str]:
    """TensorFloat-32 matmuls and cuDNN convolutions on (tf32) or off (ieee-fp32); what torch
    reports afterwards (read_precision)."""
    torch.backends.cuda.matmul.allow_tf32 = precision.tf32
    torch.backends.cudnn.allow_tf32 = precision.tf32
    return read_precision()


def read_precision() -> dict[str, str]:
    """torch's TF32 switches and its float32 matmul precision ('highest' is IEEE, 'high' TF32)."""
    return {
        "torch.backends.cuda.matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32).lower(),
        "torch.backends.cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32).lower(),
        "torch.float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def expected_switches(precision: Precision) -> dict[str, str]:
    """What read_precision reports once ``precision`` is applied."""
    on = str(precision.tf32).lower()
    return {
        "torch.backends.cuda.matmul.allow_tf32": on,
        "torch.backends.cudnn.allow_tf32": on,
        "torch.float32_matmul_precision": "high" if precision.tf32 else "highest",
    }
