"""Where models run: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def mixed_precision(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA, where tensor cores run it at several times fp32's rate; off on the CPU, where bf16
    without AVX-512 is emulated and slower than fp32."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
