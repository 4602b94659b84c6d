"""mmae.info against naive implementations of each definition (scipy/numpy matrix functions)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.spatial.distance
import torch

from mmae import info

ALPHAS = (0.5, 1.0, 1.5, 2.0, 2.7, 3.0)


def random_features(batch: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scales = torch.rand(dim, generator=gen, dtype=torch.float64) + 0.1
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64) * scales


def naive_entropy(k: np.ndarray, alpha: float) -> float:
    """Def. 3.1 literally: matrix log / matrix power of K/n (full-rank K)."""
    rho = k / k.shape[0]
    if alpha == 1.0:
        return float(-np.trace(rho @ scipy.linalg.logm(rho)).real)
    return float(np.log(np.trace(scipy.linalg.fractional_matrix_power(rho, alpha)).real) / (1 - alpha))


def naive_gram(z: np.ndarray) -> np.ndarray:
    b = z.shape[0]
    out = np.empty((b, b))
    for i in range(b):
        for j in range(b):
            out[i, j] = z[i] @ z[j] / (np.linalg.norm(z[i]) * np.linalg.norm(z[j]))
    return out


def naive_correlation(z: np.ndarray) -> np.ndarray:
    rows = z / np.linalg.norm(z, axis=1, keepdims=True)
    d = z.shape[1]
    out = np.empty((d, d))
    for i in range(d):
        for j in range(d):
            out[i, j] = rows[:, i] @ rows[:, j] / (np.linalg.norm(rows[:, i]) * np.linalg.norm(rows[:, j]))
    return out


def test_gram_matrix_and_feature_correlation_match_loops() -> None:
    z = random_features(7, 5, seed=0)
    gram = info.gram_matrix(z.float())
    corr = info.feature_correlation(z.float())
    assert gram.dtype == corr.dtype == torch.float64
    assert gram.shape == (7, 7) and corr.shape == (5, 5)
    np.testing.assert_allclose(gram.numpy(), naive_gram(z.numpy()), atol=1e-6)
    np.testing.assert_allclose(corr.numpy(), naive_correlation(z.numpy()), atol=1e-6)
    np.testing.assert_allclose(torch.diagonal(corr).numpy(), 1.0, atol=1e-12)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_matrix_entropy_matches_matrix_functions(alpha: float) -> None:
    k = info.feature_correlation(random_features(40, 9, seed=1))
    assert info.matrix_entropy(k, alpha).item() == pytest.approx(naive_entropy(k.numpy(), alpha), abs=1e-9)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_mutual_information_and_joint_entropy_match_definitions(alpha: float) -> None:
    k1 = info.gram_matrix(random_features(8, 20, seed=2))
    k2 = info.gram_matrix(random_features(8, 20, seed=3))
    h1, h2 = naive_entropy(k1.numpy(), alpha), naive_entropy(k2.numpy(), alpha)
    joint = naive_entropy(k1.numpy() * k2.numpy(), alpha)
    assert info.joint_entropy(k1, k2, alpha).item() == pytest.approx(joint, abs=1e-9)
    assert info.mutual_information(k1, k2, alpha).item() == pytest.approx(h1 + h2 - joint, abs=1e-9)


def test_spectrum_helpers_reproduce_entropies_and_effective_rank() -> None:
    k = info.feature_correlation(random_features(30, 12, seed=4))
    p = info.normalized_spectrum(k)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12) and bool((p >= 0).all())
    for alpha in ALPHAS:
        assert info.renyi_entropy_of_spectrum(p, alpha).item() == pytest.approx(
            info.matrix_entropy(k, alpha).item(), abs=1e-12
        )
    erank = torch.exp(info.renyi_entropy_of_spectrum(p, 1.0))
    assert erank.item() == pytest.approx(info.effective_rank(k).item(), rel=1e-9)


@pytest.mark.parametrize("shape", [(6, 6), (10, 4), (4, 10)])
def test_effective_rank_is_exp_shannon_of_singular_values(shape: tuple[int, int]) -> None:
    a = random_features(*shape, seed=5).numpy()
    sigma = np.linalg.svd(a, compute_uv=False)
    p = sigma / sigma.sum()
    shannon = -sum(pi * math.log(pi) for pi in p if pi > 0)
    assert info.effective_rank(torch.from_numpy(a)).item() == pytest.approx(math.exp(shannon), rel=1e-10)


def test_effective_rank_bounds_and_exact_values() -> None:
    assert info.effective_rank(torch.eye(5)).item() == pytest.approx(5.0)
    assert info.effective_rank(torch.ones(4, 4)).item() == pytest.approx(1.0)
    assert info.effective_rank(torch.diag(torch.tensor([3.0, 1.0, 0.0]))).item() == pytest.approx(
        math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    )


@pytest.mark.parametrize(("batch", "dim"), [(5, 9), (9, 5), (6, 6)])
@pytest.mark.parametrize("mu", [0.3, 1.0, 7.0])
def test_total_coding_rate_matches_logdet_and_sylvester(batch: int, dim: int, mu: float) -> None:
    z = random_features(batch, dim, seed=6).numpy()
    lhs = np.linalg.slogdet(mu * np.eye(dim) + z.T @ z)[1]
    rhs = np.linalg.slogdet(mu * np.eye(batch) + z @ z.T)[1] + (dim - batch) * math.log(mu)
    assert lhs == pytest.approx(rhs, abs=1e-10)
    for dtype, tol in ((torch.float64, 1e-10), (torch.float32, 1e-4)):
        tcr = info.total_coding_rate(torch.from_numpy(z).to(dtype), mu)
        assert tcr.dtype == dtype and tcr.ndim == 0
        assert tcr.item() == pytest.approx(lhs, rel=tol, abs=tol)


@pytest.mark.parametrize(("batch", "dim"), [(4, 7), (7, 4), (5, 5)])
def test_total_coding_rate_gradcheck(batch: int, dim: int) -> None:
    z = random_features(batch, dim, seed=7).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: info.total_coding_rate(x, 0.7), (z,))


def test_total_coding_rate_gradient_is_two_z_inverse() -> None:
    z = random_features(6, 4, seed=8).requires_grad_()
    info.total_coding_rate(z, 2.0).backward()
    expected = 2 * z.detach() @ torch.linalg.inv(2.0 * torch.eye(4, dtype=torch.float64) + z.detach().T @ z.detach())
    torch.testing.assert_close(z.grad, expected)


def test_total_coding_rate_dtypes_and_autocast() -> None:
    z = random_features(16, 8, seed=9).float()
    exact = np.linalg.slogdet(np.eye(8) + z.double().numpy().T @ z.double().numpy())[1]
    assert info.total_coding_rate(z.bfloat16(), 1.0).dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = info.total_coding_rate(z, 1.0)
    assert inside.dtype == torch.float32
    assert inside.item() == pytest.approx(exact, rel=1e-6)


def test_total_coding_rate_fallback_when_float32_cholesky_fails() -> None:
    z = torch.ones(64, 48)  # fully collapsed: mu I + z^T z has eigenvalues mu and 64 * 48 + mu
    mu = 1e-6
    shifted = z.T @ z + mu * torch.eye(48)
    assert int(torch.linalg.cholesky_ex(shifted).info) != 0, "scenario must defeat float32 Cholesky"
    exact = 47 * math.log(mu) + math.log(64 * 48 + mu)
    tcr = info.total_coding_rate(z, mu)
    assert math.isfinite(tcr.item())
    assert tcr.item() == pytest.approx(exact, rel=1e-3)


def test_total_coding_rate_rejects_non_positive_mu() -> None:
    with pytest.raises(ValueError, match="mu"):
        info.total_coding_rate(torch.ones(2, 2), 0.0)


def test_official_total_coding_rate_is_computed_directly() -> None:
    """logdet(I + (mu/d) z^T z) in float32 without cancelling two ~d log(d/mu) numbers (issue 9)."""
    z = torch.nn.functional.normalize(random_features(256, 768, seed=20), dim=1)
    exact = np.linalg.slogdet(np.eye(768) + z.numpy().T @ z.numpy() / 768)[1]
    value = info.official_total_coding_rate(z.float(), 1.0)
    assert value.dtype == torch.float32 and value.ndim == 0
    assert value.item() == pytest.approx(exact, rel=1e-6)
    cancelled = info.total_coding_rate(z.float(), 768.0) - 768 * math.log(768.0)
    assert abs(cancelled.item() - exact) > 10 * abs(value.item() - exact)  # what the direct form avoids


@pytest.mark.parametrize(("batch", "dim"), [(4, 7), (7, 4)])
def test_official_total_coding_rate_gradcheck(batch: int, dim: int) -> None:
    z = random_features(batch, dim, seed=21).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: info.official_total_coding_rate(x, 0.7), (z,))


def test_singular_values_ignore_the_inputs_round_off() -> None:
    gen = torch.Generator().manual_seed(22)
    z = (torch.randn(64, 3, generator=gen) @ torch.randn(3, 40, generator=gen)).float()  # rank 3 in float32
    sigma = info.singular_values(z)
    assert sigma.dtype == torch.float64 and sigma.shape == (40,)
    assert int((sigma > 0).sum()) == 3
    np.testing.assert_allclose(sigma[:3].numpy(), np.linalg.svd(z.double().numpy(), compute_uv=False)[:3], rtol=1e-6)


def test_singular_values_judge_round_off_against_the_given_scale() -> None:
    tiny = 1e-7 * torch.randn(64, 40, generator=torch.Generator().manual_seed(23))  # float32, all directions real
    assert int((info.singular_values(tiny) > 0).sum()) == 40
    assert int((info.singular_values(tiny, scale=1.0) > 0).sum()) == 0  # round-off of unit-size originals


def test_matrix_kl_matches_matrix_logarithms() -> None:
    k1 = info.feature_correlation(random_features(30, 6, seed=10))
    k2 = info.feature_correlation(random_features(30, 6, seed=11))
    a, b = k1.numpy(), k2.numpy()
    expected = np.trace(a @ (scipy.linalg.logm(a) - scipy.linalg.logm(b))).real
    assert info.matrix_kl(k1, k2).item() == pytest.approx(expected, abs=1e-9)


def test_matrix_kl_on_rank_deficient_inputs() -> None:
    k = info.feature_correlation(random_features(3, 8, seed=12))  # rank 3 of 8
    assert info.matrix_kl(k, k).item() == pytest.approx(0.0, abs=1e-9)
    collapsed = torch.ones(8, 8, dtype=torch.float64)
    assert info.matrix_kl(torch.eye(8, dtype=torch.float64), collapsed).item() == math.inf
    assert info.matrix_kl(collapsed, torch.eye(8, dtype=torch.float64)).item() == pytest.approx(8 * math.log(8))


def test_matrix_js_and_eigenspace_js_match_definitions() -> None:
    k1 = info.feature_correlation(random_features(30, 7, seed=13))
    k2 = info.feature_correlation(random_features(30, 7, seed=14))
    a, b = k1.numpy(), k2.numpy()
    js = naive_entropy((a + b) / 2, 1.0) - (naive_entropy(a, 1.0) + naive_entropy(b, 1.0)) / 2
    assert info.matrix_js(k1, k2).item() == pytest.approx(js, abs=1e-9)
    p1, p2 = np.linalg.eigvalsh(a), np.linalg.eigvalsh(b)
    eigen_js = scipy.spatial.distance.jensenshannon(p1 / p1.sum(), p2 / p2.sum()) ** 2
    assert info.eigenspace_js(k1, k2).item() == pytest.approx(eigen_js, abs=1e-12)
    assert info.matrix_js(k1, k1).item() == pytest.approx(0.0, abs=1e-12)


def collapsed_and_rank_deficient_inputs() -> list[torch.Tensor]:
    return [
        torch.ones(16, 6),  # every row identical
        torch.zeros(16, 6),  # no signal at all
        random_features(3, 10, seed=15),  # batch smaller than the dimension
        random_features(16, 6, seed=16) @ torch.ones(6, 6, dtype=torch.float64),  # rank 1 features
        torch.cat([random_features(16, 3, seed=17), torch.zeros(16, 3, dtype=torch.float64)], dim=1),
    ]


@pytest.mark.parametrize("case", range(5))
def test_no_nan_or_inf_on_collapsed_or_rank_deficient(case: int) -> None:
    z = collapsed_and_rank_deficient_inputs()[case]
    mats = (info.gram_matrix(z), info.feature_correlation(z))
    values = [info.total_coding_rate(z, 0.5), info.effective_rank(z)]
    for k in mats:
        values += [info.matrix_entropy(k, a) for a in (0.3, *ALPHAS)]
        values += [info.mutual_information(k, k.T, a) for a in (0.3, *ALPHAS)]
        values += [info.joint_entropy(k, torch.eye(k.shape[0]), a) for a in ALPHAS]
        values += [info.effective_rank(k), info.matrix_js(k, torch.eye(k.shape[0])), info.eigenspace_js(k, k)]
        for value in values:
            assert value.ndim == 0 and torch.isfinite(value), value
        assert 0.0 <= info.matrix_entropy(k).item() <= math.log(k.shape[0]) + 1e-12


def test_collapsed_features_have_zero_entropy_and_unit_effective_rank() -> None:
    z = torch.ones(16, 6) + 1e-3 * torch.arange(6)
    for k in (info.gram_matrix(z), info.feature_correlation(z)):
        for alpha in ALPHAS:
            assert info.matrix_entropy(k, alpha).item() == pytest.approx(0.0, abs=1e-12)
        assert info.effective_rank(k).item() == pytest.approx(1.0, abs=1e-12)


def test_small_alpha_entropy_counts_the_exact_rank() -> None:
    """H_alpha -> log rank as alpha -> 0: round-off eigenvalues must count as exact zeros."""
    k = info.feature_correlation(random_features(4, 30, seed=18))  # rank 4 of 30
    assert info.matrix_entropy(k, 1e-4).item() == pytest.approx(math.log(4), abs=1e-3)
    assert info.effective_rank(k).item() <= 4 + 1e-9


def test_renyi_of_spectrum_is_explicit_sum() -> None:
    p = torch.tensor([0.5, 0.25, 0.25, 0.0], dtype=torch.float64)
    shannon = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))
    assert info.renyi_entropy_of_spectrum(p, 1.0).item() == pytest.approx(shannon)
    assert info.renyi_entropy_of_spectrum(p, 2.0).item() == pytest.approx(-math.log(0.25 + 2 * 0.0625))
    assert info.renyi_entropy_of_spectrum(p, 0.5).item() == pytest.approx(
        2 * math.log(math.sqrt(0.5) + 2 * math.sqrt(0.25))
    )


def test_invalid_arguments_raise() -> None:
    k = torch.eye(3)
    with pytest.raises(ValueError, match="alpha"):
        info.matrix_entropy(k, 0.0)
    with pytest.raises(ValueError, match="square"):
        info.matrix_entropy(torch.ones(2, 3))
    with pytest.raises(ValueError, match="shape"):
        info.mutual_information(k, torch.eye(4))
