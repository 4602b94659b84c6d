"""Barlow Twins redundancy-reduction loss (Eq. 3, Zbontar et al., 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_BATCHNORM_EPS = 1e-5  # torch.nn.BatchNorm1d's default, as in Zbontar et al.'s affine-free BN


def cross_correlation(z1: Tensor, z2: Tensor, center: bool = True) -> Tensor:
    """Cross-correlation ``C: [d, d]`` of two views ``z1, z2: [B, d]`` (the C of Eq. 3).

    center=True: columns standardised over the batch (mean 0, biased variance 1, BatchNorm eps) and
    ``C = z1n^T z2n / B`` (Zbontar et al.). center=False: the paper's ``C_ij = zbar1_i^T zbar2_j``
    with rows l2-normalised and then columns l2-normalised over the batch, no centering (§3.2),
    the form Theorems 4.3/4.13 are stated for.
    """
    if center:
        z1n = (z1 - z1.mean(0)) / torch.sqrt(z1.var(0, unbiased=False) + _BATCHNORM_EPS)
        z2n = (z2 - z2.mean(0)) / torch.sqrt(z2.var(0, unbiased=False) + _BATCHNORM_EPS)
        return z1n.T @ z2n / z1.shape[0]
    z1n = F.normalize(F.normalize(z1, dim=1), dim=0)
    z2n = F.normalize(F.normalize(z2, dim=1), dim=0)
    return z1n.T @ z2n


def barlow_twins_loss(z1: Tensor, z2: Tensor, lam: float, center: bool = True) -> Tensor:
    """``sum_i (1 - C_ii)^2 + lam * sum_{i != j} C_ij^2`` (Eq. 3), ``z1, z2: [B, d]``, 0-dim tensor.

    A sum over the d x d matrix (as in Zbontar et al. and the paper, lam = 0.0051 there). See
    ``cross_correlation`` for ``center``.
    """
    c = cross_correlation(z1, z2, center)
    diagonal = c.diagonal()
    on_diagonal = (1 - diagonal).pow(2).sum()
    off_diagonal = c.pow(2).sum() - diagonal.pow(2).sum()
    return on_diagonal + lam * off_diagonal
