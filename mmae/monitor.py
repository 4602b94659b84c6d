"""Information monitoring: matrix-information quantities of the features a training step produced.

Cheap enough to leave on: it reuses the step's detached features (no extra forward pass) and takes
one float64 decomposition per matrix, deriving every entropy from that spectrum.

Single branch (MAE family: l2-normalised CLS of the masked pass; Siamese: the online branch z1):
  info/tcr        TCR_mu of the l2-normalised rows (Def. 4.8, in the run's mu convention)
  info/entropy_a1 von Neumann entropy of the batch Gram matrix (Def. 3.1, alpha = 1)
  info/erank      effective rank of the l2-normalised features [B, d], exp H(sigma / sum sigma)
                  (Def. 5.1, the quantity of the paper's Fig. 4); at most min(B, d)
  info/erank_centered  Def. 5.1 of the same features less their batch mean: how many directions the
                  representations vary in, at most min(B - 1, d). A shared mean direction keeps info/erank
                  near 1 on healthy MAE features; dimensional collapse (Jing et al., 2022) is this one
                  falling to a handful, so the service's collapse alarm reads it.
exp(info/entropy_a1) is the Gram-spectrum variant (sigma^2 weights, §5's "exponential of the matrix
entropy"); it is lower than info/erank and needs no series of its own. One SVD of the normalised
features gives both: the Gram's eigenvalues are the squared singular values.
Two branches (Siamese; K1, K2 built from z1 and z2, on both the d x d feature correlation "corr"
(§3.2) and the B x B Gram "gram"):
  info/erank_target                 Def. 5.1 effective rank of branch 2's l2-normalised features
  info/mi_{m}_a{1,2}                matrix mutual information (Def. 3.2)
  info/joint_entropy_{m}_a{1,2}     matrix joint entropy H(K1 ∘ K2) (Def. 3.3)
  info/js_{m}                       matrix Jensen-Shannon divergence (Def. C.2)
  info/eigen_js_{m}                 JS of the two normalised spectra (App. C.3)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from mmae.info import (
    feature_correlation,
    gram_matrix,
    jensen_shannon_of_spectra,
    normalized_spectrum,
    renyi_entropy_of_spectrum,
    singular_values,
    spectrum_distribution,
)
from mmae.losses import MuConvention, tcr_regularizer


def _entropy(p: Tensor, alpha: float) -> float:
    return renyi_entropy_of_spectrum(p, alpha).item()


def feature_singular_values(z: Tensor) -> Tensor:
    """Singular values ``[min(B, d)]`` (float64) of the l2-normalised rows of ``z: [B, d]``.

    Def. 5.1's sigma; their squares are the nonzero eigenvalues of the Gram ``zn zn^T`` (Def. 3.1's
    K). Round-off of ``z``'s own precision counts as 0 (``mmae.info.singular_values``).
    """
    return singular_values(F.normalize(z, dim=1))


def centered_singular_values(z: Tensor) -> Tensor:
    """Singular values ``[min(B, d)]`` (float64) of the l2-normalised rows of ``z: [B, d]`` less their mean.

    Round-off is judged against the normalised rows (Frobenius norm sqrt(B)), so features that are all
    one point have no direction at all (effective rank 1), not the directions of their rounding noise.
    """
    zn = F.normalize(z, dim=1)
    return singular_values(zn - zn.mean(dim=0), scale=math.sqrt(zn.shape[0]))


def effective_rank_of(sigma: Tensor) -> float:
    """Def. 5.1 from singular values ``[n]``: ``exp H(sigma / sum sigma)``."""
    return math.exp(_entropy(spectrum_distribution(sigma), 1.0))


def pair_metrics(k1: Tensor, k2: Tensor, name: str) -> dict[str, float]:
    """MI, joint entropy (alpha 1, 2), matrix JS and eigenspace JS of two [n, n] unit-diagonal matrices."""
    p1, p2 = normalized_spectrum(k1), normalized_spectrum(k2)
    joint = normalized_spectrum(k1 * k2)
    mix = normalized_spectrum((k1 + k2) / 2)
    values = {}
    for alpha in (1, 2):
        h1, h2, h12 = (_entropy(p, float(alpha)) for p in (p1, p2, joint))
        values[f"info/mi_{name}_a{alpha}"] = h1 + h2 - h12
        values[f"info/joint_entropy_{name}_a{alpha}"] = h12
    values[f"info/js_{name}"] = _entropy(mix, 1.0) - (_entropy(p1, 1.0) + _entropy(p2, 1.0)) / 2
    values[f"info/eigen_js_{name}"] = jensen_shannon_of_spectra(p1, p2).item()
    return values


class InformationMonitor:
    """Maps a step's monitor views to ``info/*`` floats; ``mu``/``convention`` are the run's TCR settings."""

    def __init__(self, mu: float, convention: MuConvention) -> None:
        self.mu = mu
        self.convention = convention

    @torch.no_grad()
    def __call__(self, views: tuple[Tensor, ...]) -> dict[str, float]:
        """views: one [B, d] matrix (single branch) or two (z1, z2) of the same shape."""
        z1 = views[0].float()
        with torch.autocast(device_type=z1.device.type, enabled=False):
            sigma = feature_singular_values(z1)
            values = {
                "info/tcr": tcr_regularizer(z1, self.mu, self.convention).item(),
                "info/entropy_a1": _entropy(spectrum_distribution(sigma.square()), 1.0),
                "info/erank": effective_rank_of(sigma),
                "info/erank_centered": effective_rank_of(centered_singular_values(z1)),
            }
            if len(views) == 2:
                z2 = views[1].float()
                values["info/erank_target"] = effective_rank_of(feature_singular_values(z2))
                values.update(pair_metrics(feature_correlation(z1), feature_correlation(z2), "corr"))
                values.update(pair_metrics(gram_matrix(z1), gram_matrix(z2), "gram"))
        return values
