"""InfoNCE, the symmetric cross-view contrastive loss of the paper's Eq. 1 (Oord et al., 2018)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce_loss(z1: Tensor, z2: Tensor, temperature: float) -> Tensor:
    """Symmetric InfoNCE of two views ``z1, z2: [B, d]`` (Eq. 1), mean over the batch.

    Rows are l2-normalised; logits are ``z1_i^T z2_j / temperature``. Each sample's positive is its
    other view and its B - 1 negatives are the other samples of the *other* view (Eq. 1's
    cross-view form, as in CLIP; SimCLR's NT-Xent also uses same-view negatives). Equals Eq. 1
    divided by B when ``temperature == 1``. Returns a 0-dim tensor.
    """
    z1n = F.normalize(z1, dim=1)
    z2n = F.normalize(z2, dim=1)
    logits = z1n @ z2n.T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
