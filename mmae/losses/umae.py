"""U-MAE's uniformity penalty (Zhang et al., 2022b), the second-order term of M-MAE (Thm. 5.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def uniformity_penalty(z: Tensor) -> Tensor:
    """``sum_{i != j} (zhat_i^T zhat_j)^2`` over l2-normalised rows of ``z: [B, d]``; 0-dim tensor.

    The paper's U-MAE term (L_U-MAE = L_MAE + gamma * this). Computed as
    ``||zhat^T zhat||_F^2 - sum_i ||zhat_i||^4`` on the smaller side, in float32 or float64 with
    autocast disabled (half precision would cancel catastrophically against the diagonal).

    The U-MAE baseline of the paper's comparisons (yifanzhang-pro/M-MAE ``uniformity_loss_square``,
    ``lamb = 0.01``) takes ``lamb`` times the MEAN over all B x B entries, diagonal included, of
    ``(zhat_i^T zhat_j)^2`` (B = global batch after its all-gather), i.e. ``lamb * (this + B) / B^2``:
    gamma = lamb / B^2 plus a constant, so the objective weighs this by ``loss.uniformity_lambda / B^2``
    (at B = 256, gamma = 1.5e-7). zhangq327/U-MAE's ``uniformity_loss(features, tau=0.1)`` also divides
    the similarities by tau (gamma = lamb / (tau^2 B^2)); the baseline has no tau.
    """
    dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        zn = F.normalize(z.to(dtype), dim=1)
        small = zn @ zn.T if zn.shape[0] < zn.shape[1] else zn.T @ zn
        return small.pow(2).sum() - zn.pow(2).sum(dim=1).pow(2).sum()
