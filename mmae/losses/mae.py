"""Masked-autoencoder reconstruction loss (He et al., 2022; the L_MAE of Eq. 11)."""

from __future__ import annotations

from torch import Tensor

_NORM_PIX_EPS = 1e-6  # as in facebookresearch/mae


def mae_loss(pred: Tensor, target: Tensor, mask: Tensor, norm_pix: bool) -> Tensor:
    """Mean squared error over masked patches only; 0-dim tensor.

    ``pred, target: [B, N, P]`` (P = patch pixels), ``mask: [B, N]`` with 1 = masked. Per patch the
    squared error is averaged over its P values, then averaged over the masked patches of the batch.
    ``norm_pix`` first standardises each target patch by its own mean and (unbiased) variance, as
    facebookresearch/mae does. A batch without masked patches gives 0.
    """
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + _NORM_PIX_EPS).sqrt()
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
