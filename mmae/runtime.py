"""Where and in which precision a run computes: device resolution and the autocast context."""

from __future__ import annotations

import contextlib

import torch

from mmae.config import TrainConfig


def resolve_device(config: TrainConfig) -> torch.device:
    """``config.device`` with ``auto`` resolved: CUDA when available, else CPU."""
    if config.device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if config.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available")
    return torch.device(config.device)


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
