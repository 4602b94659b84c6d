"""M-MAE's total-coding-rate regulariser (Eq. 11: L_M-MAE = L_MAE - lambda * TCR_mu(Z))."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from mmae.info import official_total_coding_rate, total_coding_rate

MuConvention = Literal["paper", "official"]


def tcr_regularizer(z: Tensor, mu: float, convention: MuConvention = "paper") -> Tensor:
    """TCR of the l2-normalised rows of ``z: [B, d]``, to be MAXIMISED; 0-dim float32/float64 tensor.

    paper:    ``logdet(mu I_d + Zhat^T Zhat)`` (Def. 4.8).
    official: ``logdet(I_d + (mu / d) Zhat^T Zhat)`` as yifanzhang-pro/M-MAE ``uniformity_loss_TCR``
              computes it (there returned negated and added as ``+ lamb * loss``; its divisor is
              ``sim.shape[0] = d``). It equals the paper form with ``mu' = d / mu`` minus the constant
              ``d log mu'``, so only the effective mu differs, not the gradient's shape.
    Runs with autocast disabled (half inputs are upcast to float32). The M-MAE objective is
    ``mae_loss - lam * tcr_regularizer(cls_features, mu)``. Under DDP, gather features with a
    gather whose backward all-reduces, otherwise the weight shrinks by the world size.
    """
    dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        zn = F.normalize(z.to(dtype), dim=1)
        if convention == "paper":
            return total_coding_rate(zn, mu)
        if convention == "official":
            return official_total_coding_rate(zn, mu)  # direct: no difference of two large numbers
    raise ValueError(f"unknown mu convention {convention!r}; expected 'paper' or 'official'")
