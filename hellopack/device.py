"""Device and precision choices, one place for CPU and CUDA alike.

Every CUDA-specific choice (bf16 autocast, channels_last) goes through these
functions so the CPU path exercises the same logic in tests.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

from hellopack.errors import HellopackError
from hellopack.precision import autocast_mode


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise HellopackError(f"unknown device '{spec}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HellopackError(f"device '{spec}' requested but CUDA is not available; use --device cpu")
    return dev


def wants_bf16(device: torch.device, force: bool | None = None) -> bool:
    """bf16 autocast on CUDA by default (``hellopack --autocast`` changes that); ``force`` overrides."""
    if force is not None:
        return force
    mode = autocast_mode()
    return device.type == "cuda" if mode == "auto" else mode == "bf16"


def autocast(device: torch.device, enabled: bool | None = None) -> ContextManager:
    if not wants_bf16(device, enabled):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def memory_format(device: torch.device, force: bool | None = None) -> torch.memory_format:
    """channels_last on CUDA (tensor cores); contiguous elsewhere unless forced."""
    use = device.type == "cuda" if force is None else force
    return torch.channels_last if use else torch.contiguous_format
