"""Where and in which precision a run computes: device resolution and the autocast context."""

from __future__ import annotations

import contextlib

import torch

from mmae.config import TrainConfig


def resolve_device(config: TrainConfig) -> torch.device:
    """``config.device`` with ``auto`` resolved: CUDA when available, else CPU.

    CUDA means the process's current device, with its index (``cuda:k``): the launcher picks it
    (``CUDA_VISIBLE_DEVICES``, or ``torch.cuda.set_device(local_rank)`` under torchrun / Ray Train).
    """
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def resolve_precision(config: TrainConfig, device: torch.device) -> str:
    """``config.precision`` with ``auto`` resolved: ``bf16`` on CUDA, ``fp32`` elsewhere."""
    if config.precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return config.precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``precision == "bf16"``, else a no-op context.

    Regularisers that take a log-determinant or an eigendecomposition disable autocast themselves.
    """
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
