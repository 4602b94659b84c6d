"""Matrix information-theoretic quantities (paper §3.1, §4, §5, App. C).

Notation: features are ``z: [B, d]``, one sample per ROW (the paper stacks samples as columns of
``Z in R^{d x B}``, so the paper's ``Z Z^T`` is our ``z^T z`` and its ``Z^T Z`` our ``z z^T``).
The matrices ``K`` fed to the entropies are ``n x n`` PSD with unit diagonal: the batch Gram
matrix ``gram_matrix(z)`` (n = B) or the feature correlation ``feature_correlation(z)`` (n = d).

Monitoring quantities run in float64: eigenvalues are clamped at 0, those below the rank tolerance
``n * eps(input dtype) * max eigenvalue`` are set to exactly 0 (so rank-deficient and fully
collapsed inputs give finite, exact-rank answers), and spectra are renormalised to sum to 1. They
return 0-dim float64 tensors. ``total_coding_rate`` is the differentiable training-path quantity and
keeps float32 (or float64) precision.

To compute several entropies of one matrix with a single eigendecomposition, use
``p = normalized_spectrum(K)`` then ``renyi_entropy_of_spectrum(p, alpha)``; for a PSD matrix
``effective_rank(K) == exp(renyi_entropy_of_spectrum(p, 1.0))``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def gram_matrix(z: Tensor) -> Tensor:
    """Batch Gram matrix of l2-normalised rows, ``[B, d] -> [B, B]`` float64, unit diagonal (paper §4.1).

    The paper's ``Z^T Z``. A zero row stays zero (its diagonal entry is 0).
    """
    zn = F.normalize(z.to(torch.float64), dim=1)
    return zn @ zn.T


def feature_correlation(z: Tensor) -> Tensor:
    """Batch-normalised feature correlation ``Zbar Zbar^T``, ``[B, d] -> [d, d]`` float64 (paper §3.2).

    Rows are first l2-normalised (the paper's standing assumption ``||z_j|| = 1``), then every
    feature column is l2-normalised over the batch; no centering. Unit diagonal except for
    all-zero columns.
    """
    zn = F.normalize(z.to(torch.float64), dim=1)
    zbar = F.normalize(zn, dim=0)
    return zbar.T @ zbar


def _check_square(k: Tensor) -> None:
    if k.ndim != 2 or k.shape[0] != k.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {tuple(k.shape)}")


def _spectral_decomposition(k: Tensor) -> tuple[Tensor, Tensor]:
    """Eigenvalues (clamped, below-tolerance set to 0) and eigenvectors of sym(K), in float64."""
    _check_square(k)
    tol_scale = k.shape[0] * torch.finfo(k.dtype if k.is_floating_point() else torch.float64).eps
    k64 = k.to(torch.float64)
    lam, vec = torch.linalg.eigh((k64 + k64.T) / 2)
    lam = lam.clamp_min(0.0)
    return torch.where(lam > tol_scale * lam.max(), lam, torch.zeros_like(lam)), vec


def spectrum_distribution(weights: Tensor) -> Tensor:
    """Non-negative spectral weights ``[n]`` (eigenvalues or singular values) as a probability vector.

    An all-zero vector becomes a point mass (entropy 0, effective rank 1).
    """
    total = weights.sum()
    point_mass = torch.zeros_like(weights)
    point_mass[-1] = 1.0
    return torch.where(total > 0, weights / total.clamp_min(torch.finfo(weights.dtype).tiny), point_mass)


def normalized_spectrum(k: Tensor) -> Tensor:
    """Eigenvalues of PSD ``K: [n, n]`` as a probability vector ``[n]`` (float64, ascending).

    For unit-diagonal K this is the spectrum of ``K / n`` used by Def. 3.1.
    """
    return spectrum_distribution(_spectral_decomposition(k)[0])


def renyi_entropy_of_spectrum(p: Tensor, alpha: float = 1.0) -> Tensor:
    """Rényi entropy (nats) of a probability vector ``p: [n]``; alpha = 1 is Shannon's (Def. 3.1)."""
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    if alpha == 1.0:
        return torch.special.entr(p).sum()
    return torch.log(p.pow(alpha).sum()) / (1.0 - alpha)


def jensen_shannon_of_spectra(p1: Tensor, p2: Tensor) -> Tensor:
    """Jensen-Shannon divergence (nats) of two probability vectors of equal length (App. C.3)."""
    mix = (p1 + p2) / 2
    return torch.special.entr(mix).sum() - (torch.special.entr(p1).sum() + torch.special.entr(p2).sum()) / 2


def matrix_entropy(k: Tensor, alpha: float = 1.0) -> Tensor:
    """Matrix-based alpha-order Rényi entropy ``H_alpha(K)`` of PSD ``K: [n, n]`` (Def. 3.1), nats.

    ``1/(1-alpha) log tr((K/n)^alpha)``; alpha = 1 is the von Neumann entropy ``-tr(K/n log K/n)``.
    Lies in ``[0, log n]``.
    """
    return renyi_entropy_of_spectrum(normalized_spectrum(k), alpha)


def _check_same_shape(k1: Tensor, k2: Tensor) -> None:
    if k1.shape != k2.shape:
        raise ValueError(f"matrices differ in shape: {tuple(k1.shape)} vs {tuple(k2.shape)}")


def joint_entropy(k1: Tensor, k2: Tensor, alpha: float = 1.0) -> Tensor:
    """Matrix joint entropy ``H_alpha(K1, K2) = H_alpha(K1 ∘ K2)`` (Def. 3.3), ``K1, K2: [n, n]``."""
    _check_same_shape(k1, k2)
    return matrix_entropy(k1.to(torch.float64) * k2.to(torch.float64), alpha)


def mutual_information(k1: Tensor, k2: Tensor, alpha: float = 1.0) -> Tensor:
    """Matrix mutual information ``H(K1) + H(K2) - H(K1 ∘ K2)`` (Def. 3.2), ``K1, K2: [n, n]``.

    At most ``log n`` for unit-diagonal inputs (Prop. 4.5).
    """
    joint = joint_entropy(k1, k2, alpha)
    return matrix_entropy(k1, alpha) + matrix_entropy(k2, alpha) - joint


def singular_values(a: Tensor, scale: float | None = None) -> Tensor:
    """Singular values of ``A: [m, n]``, ``[min(m, n)]`` float64 descending; below-tolerance ones are 0.

    The tolerance is ``max(m, n) * eps(A's dtype) * scale`` with ``scale`` the size of the quantities
    ``A`` was computed from (default ``sigma_max``), so round-off of the input's own precision never
    counts as a direction. A difference of nearly equal matrices (features minus their mean) passes the
    size of the originals, so that their round-off is not mistaken for structure.
    """
    if a.ndim != 2:
        raise ValueError(f"expected a matrix, got shape {tuple(a.shape)}")
    tol_scale = max(a.shape) * torch.finfo(a.dtype if a.is_floating_point() else torch.float64).eps
    sigma = torch.linalg.svdvals(a.to(torch.float64))
    reference = sigma.max() if scale is None else scale
    return torch.where(sigma > tol_scale * reference, sigma, torch.zeros_like(sigma))


def effective_rank(a: Tensor) -> Tensor:
    """Effective rank ``exp(H(sigma / sum sigma))`` of a matrix ``A: [m, n]`` (Def. 5.1, Roy & Vetterli).

    Uses ``singular_values`` (float64, below-tolerance ones count as 0). Lies in ``[1, rank A]``; the
    all-zero matrix gives 1. For unit-diagonal PSD ``K`` this equals ``exp(H_1(K))``; note that
    ``effective_rank(z)`` of features differs from ``effective_rank(z^T z)`` (sigma vs sigma^2). The
    paper's Fig. 4 measures ``effective_rank`` of the l2-normalised representations.
    """
    return torch.exp(torch.special.entr(spectrum_distribution(singular_values(a))).sum())


def total_coding_rate(z: Tensor, mu: float) -> Tensor:
    """Total coding rate ``TCR_mu = logdet(mu I_d + z^T z)`` of ``z: [B, d]`` (Def. 4.8, rows = samples).

    The paper's convention. Differentiable; computed as ``d log mu + logdet(I + z^T z / mu)`` by
    ``_logdet_identity_plus_gram`` (smaller side, Cholesky, float64 fallback). Runs with autocast
    disabled in ``z``'s dtype, upcasting half precision to float32. Requires ``mu > 0``. Returns a
    0-dim tensor. The input is used as given: l2-normalise first for the paper's regulariser
    (``mmae.losses.tcr_regularizer``).
    """
    _check_mu(mu)
    return _logdet_identity_plus_gram(z, 1.0 / mu) + z.shape[1] * math.log(mu)


def official_total_coding_rate(z: Tensor, mu: float) -> Tensor:
    """``logdet(I_d + (mu / d) z^T z)`` of ``z: [B, d]``: TCR in the official M-MAE code's convention.

    yifanzhang-pro/M-MAE ``uniformity_loss_TCR`` (divisor ``d``); the convention behind the paper's
    tables. Equals ``total_coding_rate(z, equivalent_mu(mu, d)) - d log(d / mu)`` but is computed
    directly, so no large constant cancels in float32. Same precision, autocast and return rules as
    ``total_coding_rate``.
    """
    _check_mu(mu)
    return _logdet_identity_plus_gram(z, mu / z.shape[1])


def equivalent_mu(mu: float, dim: int) -> float:
    """The mu of the other TCR convention that gives the same regulariser, for feature width ``dim``.

    ``logdet(I_d + (mu_o / d) Z^T Z) = logdet(mu_p I_d + Z^T Z) - d log mu_p`` with ``mu_p = d / mu_o``
    (Def. 4.8 vs the official code): the two differ by a constant, so their gradients are identical.
    The map ``mu -> d / mu`` is its own inverse, so it converts either way (official 1 at d = 192 is
    paper 192; paper 1 is official 192).
    """
    _check_mu(mu)
    if dim < 1:
        raise ValueError(f"dim must be a positive feature width, got {dim}")
    return dim / mu


def _check_mu(mu: float) -> None:
    if mu <= 0:
        raise ValueError(f"mu must be positive, got {mu}")


def _logdet_identity_plus_gram(z: Tensor, scale: float) -> Tensor:
    """``logdet(I_d + scale z^T z) = logdet(I_B + scale z z^T)`` (Sylvester) of ``z: [B, d]``, 0-dim.

    The Gram of the smaller side is formed in ``z``'s dtype (half precision upcast to float32) with
    autocast off; the identity shift and the Cholesky factor run in float64, because rounding
    ``1 + scale * g`` to float32 would lose the digits of a near-identity logdet (one n x n factor,
    cheap next to the Gram). The result is cast back to the Gram's dtype. When Cholesky still fails
    (huge ``scale`` on a collapsed batch) a float64 eigenvalue fallback clamps eigenvalues at 1; the
    check synchronises with the GPU once per call.
    """
    dtype = z.dtype if z.dtype in (torch.float32, torch.float64) else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        chol, failed = torch.linalg.cholesky_ex(_shifted_small_gram(z.to(dtype), scale))
        if bool(failed.any()):
            spectrum = torch.linalg.eigvalsh(_shifted_small_gram(z.to(torch.float64), scale))
            return spectrum.clamp_min(1.0).log().sum().to(dtype)
        return (2.0 * chol.diagonal().log().sum()).to(dtype)


def _shifted_small_gram(z: Tensor, scale: float) -> Tensor:
    """``I + scale z z^T`` if B < d else ``I + scale z^T z``, float64, for ``z: [B, d]`` (Gram in z's dtype)."""
    small = (z @ z.T if z.shape[0] < z.shape[1] else z.T @ z).to(torch.float64)
    return scale * small + torch.eye(small.shape[0], dtype=torch.float64, device=z.device)


def matrix_kl(k1: Tensor, k2: Tensor) -> Tensor:
    """Matrix KL divergence ``tr[K1 (log K1 - log K2)]`` of PSD ``K1, K2: [n, n]`` (Def. 4.9, Bach 2022).

    Unnormalised, as in the paper (``H_1(K) = log n - KL(K, I_n) / n``, Prop. 4.10). Uses
    ``0 log 0 = 0``; returns ``+inf`` when K1 has weight on the null space of K2 (the divergence is
    undefined there), never NaN.
    """
    _check_same_shape(k1, k2)
    lam1, _ = _spectral_decomposition(k1)
    lam2, vec2 = _spectral_decomposition(k2)
    k1_64 = k1.to(torch.float64)
    weights = torch.einsum("ij,ik,kj->j", vec2, (k1_64 + k1_64.T) / 2, vec2)
    tol = k1.shape[0] * torch.finfo(k1.dtype).eps * lam1.max().clamp_min(torch.finfo(torch.float64).tiny)
    weights = torch.where(weights > tol, weights, torch.zeros_like(weights))
    self_term = -torch.special.entr(lam1).sum()
    on_support = lam2 > 0
    cross = (weights * torch.where(on_support, lam2, torch.ones_like(lam2)).log()).sum()
    undefined = (weights > 0) & ~on_support
    return torch.where(undefined.any(), torch.full_like(cross, math.inf), self_term - cross)


def matrix_js(k1: Tensor, k2: Tensor) -> Tensor:
    """Matrix Jensen-Shannon divergence ``H_1((K1+K2)/2) - (H_1(K1) + H_1(K2))/2`` (Def. C.2)."""
    _check_same_shape(k1, k2)
    mix = (k1.to(torch.float64) + k2.to(torch.float64)) / 2
    return matrix_entropy(mix) - (matrix_entropy(k1) + matrix_entropy(k2)) / 2


def eigenspace_js(k1: Tensor, k2: Tensor) -> Tensor:
    """JS divergence of the normalised (ascending) eigenvalue distributions of K1 and K2 (App. C.3)."""
    _check_same_shape(k1, k2)
    return jensen_shannon_of_spectra(normalized_spectrum(k1), normalized_spectrum(k2))
