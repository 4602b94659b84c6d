"""BYOL: normalised prediction loss, EMA target update and cosine momentum (Grill et al., 2020)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def byol_loss(p: Tensor, z: Tensor) -> Tensor:
    """``mean_i (2 - 2 cos(p_i, z_i))`` of online predictions ``p: [B, d]`` and targets ``z: [B, d]``.

    The target is detached (BYOL's stop-gradient). One direction only: the caller symmetrises by
    swapping the views. Returns a 0-dim tensor in [0, 4].
    """
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """In place ``theta_target <- momentum * theta_target + (1 - momentum) * theta_online``.

    Parameters only (matched by order; the modules must share an architecture). Buffers such as
    BatchNorm running statistics are left to the target's own forward passes.
    """
    for t_param, o_param in zip(target.parameters(), online.parameters(), strict=True):
        t_param.lerp_(o_param.detach(), 1.0 - momentum)


def cosine_momentum(step: int, total_steps: int, base: float) -> float:
    """BYOL's EMA momentum ``1 - (1 - base) (cos(pi k / K) + 1) / 2``: ``base`` at step 0, 1 at the end.

    ``k = step`` is clipped to ``[0, total_steps]``.
    """
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0
