"""The paper's propositions and theorems (§4-5, App. A) as numeric checks on mmae.info and mmae.losses.

Matrices K are d x d positive semi-definite with unit diagonal (paper §3.1). Where a claim needs
``TCR_mu(K) = logdet(mu I + K)`` of a matrix, we pass a factor z with ``z^T z = K``.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmae import info
from mmae.losses import barlow_twins_loss, spectral_contrastive_loss, tcr_regularizer, uniformity_penalty

ALPHAS = (0.5, 1.0, 2.0, 3.0)


def random_correlation(dim: int, rank: int, gen: torch.Generator) -> torch.Tensor:
    """Random unit-diagonal PSD matrix of rank <= ``rank``, with an uneven spectrum."""
    x = torch.randn(rank, dim, generator=gen, dtype=torch.float64)
    x = x * torch.rand(rank, 1, generator=gen, dtype=torch.float64).pow(3)
    x = x + torch.randn(rank, 1, generator=gen, dtype=torch.float64) * torch.rand(1, generator=gen).item()
    xbar = F.normalize(x, dim=0)
    return xbar.T @ xbar


def correlation_pairs(count: int, dim: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    ranks = torch.randint(1, 2 * dim, (count, 2), generator=gen).tolist()
    return [(random_correlation(dim, r1, gen), random_correlation(dim, r2, gen)) for r1, r2 in ranks]


def factor(k: torch.Tensor) -> torch.Tensor:
    """z: [n, n] with z^T z = K (symmetric PSD K)."""
    lam, vec = torch.linalg.eigh(k)
    return lam.clamp_min(0).sqrt()[:, None] * vec.T


def tcr_of_matrix(k: torch.Tensor, mu: float) -> torch.Tensor:
    return info.total_coding_rate(factor(k), mu)


def frobenius_sq(k: torch.Tensor) -> float:
    return k.pow(2).sum().item()


# --- §4.1 mutual information --------------------------------------------------------------------


def test_prop_4_1_order_two_mutual_information_is_a_frobenius_ratio() -> None:
    for k1, k2 in correlation_pairs(20, 7, seed=0):
        expected = 2 * math.log(7) - math.log(frobenius_sq(k1) * frobenius_sq(k2) / frobenius_sq(k1 * k2))
        assert info.mutual_information(k1, k2, 2.0).item() == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("alpha", (0.3, *ALPHAS, 5.0))
def test_prop_4_5_mutual_information_at_most_log_d(alpha: float) -> None:
    for k1, k2 in correlation_pairs(60, 6, seed=1):
        mi = info.mutual_information(k1, k2, alpha).item()
        assert mi <= math.log(6) + 1e-10
        assert mi <= min(info.matrix_entropy(k1, alpha).item(), info.matrix_entropy(k2, alpha).item()) + 1e-10


# --- §4.2 joint entropy and total coding rate ------------------------------------------------------


@pytest.mark.parametrize("alpha", (0.3, *ALPHAS, 5.0))
def test_prop_4_7_joint_entropy_at_least_each_marginal(alpha: float) -> None:
    for k1, k2 in correlation_pairs(60, 6, seed=2):
        joint = info.joint_entropy(k1, k2, alpha).item()
        assert joint >= max(info.matrix_entropy(k1, alpha).item(), info.matrix_entropy(k2, alpha).item()) - 1e-10


def test_prop_4_7_von_neumann_joint_entropy_subadditive_and_rank_bounded() -> None:
    for k1, k2 in correlation_pairs(60, 6, seed=3):
        joint = info.joint_entropy(k1, k2).item()
        assert joint <= info.matrix_entropy(k1).item() + info.matrix_entropy(k2).item() + 1e-10
        ranks = [torch.linalg.matrix_rank(k, hermitian=True).item() for k in (k1 * k2, k1, k2)]
        assert joint <= math.log(ranks[0]) + 1e-10
        assert math.log(ranks[0]) <= math.log(ranks[1]) + math.log(ranks[2]) + 1e-10


def test_prop_4_7_upper_bound_does_not_extend_to_alpha_two() -> None:
    """H_2(K1 ∘ K2) <= H_2(K1) + H_2(K2) fails (so I_2 < 0) for this pair; it holds for alpha = 1.

    With K1 = blockdiag(ones(2, 2), 1) and K2 = [[1, a, b], [a, 1, b], [b, b, 1]]:
    I_2 = 2 log 3 - log(5 (3 + 2a^2 + 4b^2) / (3 + 2a^2)) < 0 for a = 0.6, b = 0.88 (PSD as b^2 <= (1+a)/2).
    """
    k1 = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    a, b = 0.6, 0.88
    k2 = torch.tensor([[1.0, a, b], [a, 1.0, b], [b, b, 1.0]], dtype=torch.float64)
    assert torch.linalg.eigvalsh(k2).min() >= 0
    expected = 2 * math.log(3) - math.log(5 * (3 + 2 * a**2 + 4 * b**2) / (3 + 2 * a**2))
    assert info.mutual_information(k1, k2, 2.0).item() == pytest.approx(expected, abs=1e-12)
    assert expected < -0.01
    assert info.mutual_information(k1, k2, 1.0).item() >= 0


def test_prop_4_10_kl_identities() -> None:
    gen = torch.Generator().manual_seed(4)
    for rank in (2, 5, 8, 20):
        k = random_correlation(8, rank, gen)
        kl_to_identity = info.matrix_kl(k, torch.eye(8, dtype=torch.float64))
        assert info.matrix_entropy(k).item() == pytest.approx(math.log(8) - kl_to_identity.item() / 8, abs=1e-10)
        for mu in (0.1, 1.0, 3.0):
            shifted = (mu * torch.eye(8, dtype=torch.float64) + k) / (1 + mu)
            expected = 8 * math.log(1 + mu) - info.matrix_kl(torch.eye(8, dtype=torch.float64), shifted).item()
            assert tcr_of_matrix(k, mu).item() == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("mu", (0.05, 0.5, 1.0, 3.0))
def test_prop_4_11_hadamard_total_coding_rate_superadditive(mu: float) -> None:
    for k1, k2 in correlation_pairs(40, 6, seed=5):
        joint = tcr_of_matrix(k1 * k2, mu**2 + 2 * mu).item()
        assert joint >= tcr_of_matrix(k1, mu).item() + tcr_of_matrix(k2, mu).item() - 1e-9
    eye = torch.eye(6, dtype=torch.float64)
    assert tcr_of_matrix(eye, mu**2 + 2 * mu).item() == pytest.approx(2 * tcr_of_matrix(eye, mu).item())


def test_prop_4_12_order_two_joint_entropy_is_a_frobenius_norm() -> None:
    for k1, k2 in correlation_pairs(20, 7, seed=6):
        expected = 2 * math.log(7) - math.log(frobenius_sq(k1 * k2))
        assert info.joint_entropy(k1, k2, 2.0).item() == pytest.approx(expected, abs=1e-10)


def test_prop_4_15_identity_maximises_entropy_and_total_coding_rate() -> None:
    dim = 8
    eye = torch.eye(dim, dtype=torch.float64)
    gen = torch.Generator().manual_seed(7)
    mats = [random_correlation(dim, int(r), gen) for r in torch.randint(1, 3 * dim, (200,), generator=gen)]
    for alpha in (0.3, *ALPHAS, 8.0):
        top = info.matrix_entropy(eye, alpha).item()
        assert top == pytest.approx(math.log(dim))
        assert max(info.matrix_entropy(k, alpha).item() for k in mats) < top - 1e-6
    for mu in (0.1, 1.0, 3.0):
        top = tcr_of_matrix(eye, mu).item()
        assert top == pytest.approx(dim * math.log(1 + mu))
        assert max(tcr_of_matrix(k, mu).item() for k in mats) < top - 1e-6


# --- Theorems 4.3, 4.13, 4.17: bounds from the actual loss values -----------------------------------


def spectral_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """View pairs from far apart to near the optimum (orthonormal rows, B <= d)."""
    gen = torch.Generator().manual_seed(8)
    batch, dim = 12, 24
    q = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0][:batch]
    random = F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=1)
    cases = [(random, F.normalize(torch.randn(batch, dim, generator=gen, dtype=torch.float64), dim=1))]
    for base in (q, random):
        for noise in (0.0, 0.003, 0.03, 0.3):
            other = base + noise * torch.randn(batch, dim, generator=gen, dtype=torch.float64)
            cases.append((base, F.normalize(other, dim=1)))
    return cases


def barlow_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """View pairs whose batch-normalised feature columns range from random to orthonormal (B = 2d)."""
    gen = torch.Generator().manual_seed(9)
    dim = 8
    q = [torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0] for _ in range(2)]
    orthogonal = torch.cat(q) / math.sqrt(2)  # unit rows, orthonormal columns
    random = F.normalize(torch.randn(2 * dim, dim, generator=gen, dtype=torch.float64), dim=1)
    cases = [(random, F.normalize(torch.randn(2 * dim, dim, generator=gen, dtype=torch.float64), dim=1))]
    for base in (orthogonal, random):
        for noise in (0.0, 0.001, 0.01, 0.3):
            other = base + noise * torch.randn(2 * dim, dim, generator=gen, dtype=torch.float64)
            cases.append((base, F.normalize(other, dim=1)))
    return cases


@pytest.mark.parametrize("lam", (0.2, 1.0, 5.0))
def test_theorems_4_3_and_4_13_spectral_contrastive_bounds(lam: float) -> None:
    tightest = -math.inf
    for z1, z2 in spectral_cases():
        batch = z1.shape[0]
        loss = spectral_contrastive_loss(z1, z2, lam).item()
        g1, g2 = info.gram_matrix(z1), info.gram_matrix(z2)
        scale = 1 + (2 + 2 / (batch * lam)) * loss
        mi_bound = math.log(batch) - 2 * math.log(scale)
        joint_bound = math.log(batch) - math.log(scale)
        assert info.mutual_information(g1, g2, 2.0).item() >= mi_bound - 1e-9
        assert info.joint_entropy(g1, g2, 2.0).item() >= joint_bound - 1e-9
        tightest = max(tightest, mi_bound)
    assert tightest > 0.9 * math.log(12), "some case must make the bound non-vacuous"


@pytest.mark.parametrize("lam", (0.0051, 0.1, 1.0))
def test_theorems_4_3_4_13_4_17_barlow_twins_bounds(lam: float) -> None:
    tightest = -math.inf
    for z1, z2 in barlow_cases():
        dim = z1.shape[1]
        loss = barlow_twins_loss(z1, z2, lam, center=False).item()
        k1, k2 = info.feature_correlation(z1), info.feature_correlation(z2)
        slack = 2 / (dim * lam) * loss + 4 * math.sqrt(dim * loss)
        mi_bound = math.log(dim) - 2 * math.log(1 + slack)
        assert info.mutual_information(k1, k2, 2.0).item() >= mi_bound - 1e-9
        assert info.joint_entropy(k1, k2, 2.0).item() >= math.log(dim) - math.log(1 + slack) - 1e-9
        for mu in (0.5, 1.0, 4.0):
            tcr_bound = dim * math.log(mu + 1) - (2 / lam * loss + 4 * (dim - 1) * math.sqrt(dim * loss)) / (2 * mu**2)
            assert tcr_of_matrix(k1 * k2, mu).item() >= tcr_bound - 1e-9
        tightest = max(tightest, mi_bound)
    assert tightest > 0.5 * math.log(8), "some case must make the bound non-vacuous"


# --- Theorems 4.4 / 4.14 and Corollaries 4.6 / 4.16: zero loss attains the maxima ---------------------


@pytest.mark.parametrize("alpha", (0.5, 1.0, 2.0, 3.0, 7.5))
def test_theorems_4_4_and_4_14_zero_barlow_twins_loss_maximises_information(alpha: float) -> None:
    gen = torch.Generator().manual_seed(10)
    dim = 6
    q = [torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0] for _ in range(3)]
    z = torch.cat(q) / math.sqrt(3)
    assert barlow_twins_loss(z, z.clone(), 0.0051, center=False).item() == pytest.approx(0.0, abs=1e-12)
    k1, k2 = info.feature_correlation(z), info.feature_correlation(z.clone())
    assert info.mutual_information(k1, k2, alpha).item() == pytest.approx(math.log(dim), abs=1e-9)
    assert info.joint_entropy(k1, k2, alpha).item() == pytest.approx(math.log(dim), abs=1e-9)
    # Corollaries 4.6 / 4.16: the order-2 bounds are tight at zero loss.
    assert math.log(dim) - 2 * math.log(1 + 0.0) == pytest.approx(info.mutual_information(k1, k2, 2.0).item())


@pytest.mark.parametrize("alpha", (0.5, 1.0, 2.0, 3.0, 7.5))
def test_theorems_4_4_and_4_14_zero_spectral_loss_maximises_information(alpha: float) -> None:
    gen = torch.Generator().manual_seed(11)
    z = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))[0][:10]
    assert spectral_contrastive_loss(z, z.clone(), 1.0).item() == pytest.approx(0.0, abs=1e-12)
    g1, g2 = info.gram_matrix(z), info.gram_matrix(z.clone())
    assert info.mutual_information(g1, g2, alpha).item() == pytest.approx(math.log(10), abs=1e-9)
    assert info.joint_entropy(g1, g2, alpha).item() == pytest.approx(math.log(10), abs=1e-9)


# --- Theorem 5.2: U-MAE is the second-order approximation of M-MAE -----------------------------------


def test_theorem_5_2_umae_is_second_order_approximation_of_mmae() -> None:
    """-lam TCR_mu(Z) = const(mu) + gamma * U(Z) - lam tr(G^3) / (3 mu^3) + O(mu^-4), gamma = lam / (2 mu^2).

    const(mu) = -lam (d log mu + B / mu - B / (2 mu^2)) and G = Zhat Zhat^T is the batch Gram matrix
    (the Taylor series of tr log(I + G / mu) converges for mu > ||G||).
    """
    gen = torch.Generator().manual_seed(12)
    batch, dim, lam = 12, 20, 0.5
    z = torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 3.0  # tcr/uniformity normalise rows
    gram = info.gram_matrix(z)
    spectral_norm = torch.linalg.eigvalsh(gram).max().item()
    third_order = -lam * torch.trace(gram @ gram @ gram).item() / 3
    for mu in (16 * spectral_norm, 64 * spectral_norm, 256 * spectral_norm):
        const = -lam * (dim * math.log(mu) + batch / mu - batch / (2 * mu**2))
        first_order_residual = -lam * tcr_regularizer(z, mu).item() - const
        gap = first_order_residual - lam / (2 * mu**2) * uniformity_penalty(z).item()
        assert abs(gap) < 2 * spectral_norm / mu * abs(first_order_residual)
        assert gap * mu**3 == pytest.approx(third_order, rel=spectral_norm / mu)
