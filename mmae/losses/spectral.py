"""Spectral contrastive loss in the paper's generalised sum form (Eq. 2, HaoChen et al., 2021)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def spectral_contrastive_loss(z1: Tensor, z2: Tensor, lam: float) -> Tensor:
    """``sum_i ||z1_i - z2_i||^2 + lam * sum_{i != j} (z1_i^T z2_j)^2`` on l2-normalised rows (Eq. 2).

    ``z1, z2: [B, d]``. A SUM, not a mean: the first term grows like B and the second like B^2, so
    learning rates tuned at one batch size do not transfer. HaoChen et al. write expectations,
    ``-2 E[z^T z+] + E[(z^T z-)^2]``; on the unit sphere the first term here is B times theirs plus
    the constant 2B, and the second is B(B - 1) times theirs (lam generalises their weight 1).
    Returns a 0-dim tensor.
    """
    z1n = F.normalize(z1, dim=1)
    z2n = F.normalize(z2, dim=1)
    alignment = (z1n - z2n).pow(2).sum()
    cross = z1n @ z2n.T
    off_diagonal = cross.pow(2).sum() - cross.diagonal().pow(2).sum()
    return alignment + lam * off_diagonal
