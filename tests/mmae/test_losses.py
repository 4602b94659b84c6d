"""mmae.losses against straightforward loop implementations of the paper's equations, plus known values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from mmae import info
from mmae.losses import (
    barlow_twins_loss,
    byol_loss,
    cosine_momentum,
    cross_correlation,
    ema_update,
    info_nce_loss,
    mae_loss,
    spectral_contrastive_loss,
    tcr_regularizer,
    uniformity_penalty,
)


def features(batch: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64) * 2.0 + 0.3


def unit_rows(z: torch.Tensor) -> np.ndarray:
    a = z.detach().numpy()
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def orthonormal_rows(batch: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))[0][:batch]


def assert_gradients_flow(loss_fn, *inputs: torch.Tensor) -> None:
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    loss_fn(*leaves).backward()
    for leaf in leaves:
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0


# --- InfoNCE (Eq. 1) -------------------------------------------------------------------------------


def reference_info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> float:
    a, b = unit_rows(z1), unit_rows(z2)
    total = 0.0
    for i in range(len(a)):
        row = [math.exp(a[i] @ b[j] / temperature) for j in range(len(b))]
        col = [math.exp(b[i] @ a[j] / temperature) for j in range(len(a))]
        total += math.log(row[i] / sum(row)) + math.log(col[i] / sum(col))
    return -total / (2 * len(a))


@pytest.mark.parametrize("temperature", (0.1, 0.5, 1.0))
def test_info_nce_matches_eq1(temperature: float) -> None:
    z1, z2 = features(9, 5, seed=0), features(9, 5, seed=1)
    loss = info_nce_loss(z1, z2, temperature)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(reference_info_nce(z1, z2, temperature), rel=1e-10)
    assert info_nce_loss(z2, z1, temperature).item() == pytest.approx(loss.item(), rel=1e-12)
    assert_gradients_flow(lambda a, b: info_nce_loss(a, b, temperature), z1, z2)


def test_info_nce_known_value_for_identical_orthonormal_views() -> None:
    z = orthonormal_rows(6, 8, seed=2)
    expected = math.log(1 + 5 * math.exp(-1 / 0.5))
    assert info_nce_loss(z, 3 * z, 0.5).item() == pytest.approx(expected, rel=1e-12)


# --- Spectral contrastive (Eq. 2) ------------------------------------------------------------------


def reference_spectral(z1: torch.Tensor, z2: torch.Tensor, lam: float) -> float:
    a, b = unit_rows(z1), unit_rows(z2)
    alignment = sum(float(np.sum((a[i] - b[i]) ** 2)) for i in range(len(a)))
    uniform = sum(float(a[i] @ b[j]) ** 2 for i in range(len(a)) for j in range(len(b)) if i != j)
    return alignment + lam * uniform


@pytest.mark.parametrize("lam", (0.0, 0.3, 1.0))
def test_spectral_contrastive_matches_eq2(lam: float) -> None:
    z1, z2 = features(7, 4, seed=3), features(7, 4, seed=4)
    loss = spectral_contrastive_loss(z1, z2, lam)
    assert loss.item() == pytest.approx(reference_spectral(z1, z2, lam), rel=1e-10)
    assert spectral_contrastive_loss(z2, z1, lam).item() == pytest.approx(loss.item(), rel=1e-12)
    assert_gradients_flow(lambda a, b: spectral_contrastive_loss(a, b, 1.0), z1, z2)


def test_spectral_contrastive_known_values() -> None:
    z = orthonormal_rows(5, 9, seed=5)
    assert spectral_contrastive_loss(z, 2 * z, 1.0).item() == pytest.approx(0.0, abs=1e-12)
    y = features(5, 9, seed=6)
    off = info.gram_matrix(y).pow(2).sum().item() - 5
    assert spectral_contrastive_loss(y, -y, 0.7).item() == pytest.approx(4 * 5 + 0.7 * off, rel=1e-10)


# --- Barlow Twins (Eq. 3) --------------------------------------------------------------------------


def reference_cross_correlation(z1: torch.Tensor, z2: torch.Tensor, center: bool) -> np.ndarray:
    def prepare(z: torch.Tensor) -> np.ndarray:
        a = z.detach().numpy().copy()
        if center:
            for i in range(a.shape[1]):
                col = a[:, i]
                a[:, i] = (col - col.mean()) / math.sqrt(col.var() + 1e-5)  # numpy var is the biased one
            return a / math.sqrt(len(a))
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return a / np.linalg.norm(a, axis=0, keepdims=True)

    a, b = prepare(z1), prepare(z2)
    d = a.shape[1]
    return np.array([[sum(a[k, i] * b[k, j] for k in range(len(a))) for j in range(d)] for i in range(d)])


@pytest.mark.parametrize("center", (True, False))
@pytest.mark.parametrize("lam", (0.0051, 1.0))
def test_barlow_twins_matches_eq3(center: bool, lam: float) -> None:
    z1, z2 = features(10, 4, seed=7), features(10, 4, seed=8)
    c = reference_cross_correlation(z1, z2, center)
    np.testing.assert_allclose(cross_correlation(z1, z2, center).numpy(), c, atol=1e-12)
    expected = sum((1 - c[i, i]) ** 2 for i in range(4)) + lam * sum(
        c[i, j] ** 2 for i in range(4) for j in range(4) if i != j
    )
    loss = barlow_twins_loss(z1, z2, lam, center=center)
    assert loss.item() == pytest.approx(expected, rel=1e-10)
    assert barlow_twins_loss(z2, z1, lam, center=center).item() == pytest.approx(loss.item(), rel=1e-12)
    assert_gradients_flow(lambda a, b: barlow_twins_loss(a, b, lam, center=center), z1, z2)


def test_barlow_twins_is_zero_for_identical_decorrelated_views() -> None:
    hadamard = torch.tensor([[1.0]], dtype=torch.float64)
    for _ in range(3):
        hadamard = torch.cat([torch.cat([hadamard, hadamard], 1), torch.cat([hadamard, -hadamard], 1)])
    decorrelated = hadamard[:, 1:]  # 8 x 7: zero-mean, unit-variance, mutually orthogonal columns
    assert barlow_twins_loss(decorrelated, decorrelated.clone(), 0.0051).item() == pytest.approx(0.0, abs=1e-8)
    assert barlow_twins_loss(decorrelated, decorrelated.clone(), 1.0, center=False).item() == pytest.approx(
        0.0, abs=1e-12
    )
    shifted = 5 * decorrelated + 2  # standardisation removes scale and shift
    assert barlow_twins_loss(shifted, decorrelated, 0.0051).item() == pytest.approx(0.0, abs=1e-8)


# --- BYOL ------------------------------------------------------------------------------------------


def test_byol_loss_matches_cosine_reference_and_stops_target_gradient() -> None:
    p, z = features(6, 5, seed=9), features(6, 5, seed=10)
    a, b = unit_rows(p), unit_rows(z)
    expected = sum(2 - 2 * float(a[i] @ b[i]) for i in range(6)) / 6
    assert byol_loss(p, z).item() == pytest.approx(expected, rel=1e-10)
    assert byol_loss(p, 4 * p).item() == pytest.approx(0.0, abs=1e-12)
    assert byol_loss(p, -p).item() == pytest.approx(4.0)
    p_leaf, z_leaf = p.clone().requires_grad_(), z.clone().requires_grad_()
    byol_loss(p_leaf, z_leaf).backward()
    assert p_leaf.grad is not None and p_leaf.grad.abs().sum() > 0
    assert z_leaf.grad is None


def test_ema_update_moves_target_toward_online() -> None:
    torch.manual_seed(0)
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [t.detach().clone() for t in target.parameters()]
    ema_update(target, online, momentum=0.9)
    for new, old, src in zip(target.parameters(), before, online.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), 0.9 * old + 0.1 * src.detach())
        assert not new.requires_grad or new.grad is None
    ema_update(target, online, momentum=0.0)
    for new, src in zip(target.parameters(), online.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), src.detach())


def test_cosine_momentum_schedule() -> None:
    assert cosine_momentum(0, 100, 0.99) == pytest.approx(0.99)
    assert cosine_momentum(50, 100, 0.99) == pytest.approx(0.995)
    assert cosine_momentum(100, 100, 0.99) == pytest.approx(1.0)
    assert cosine_momentum(250, 100, 0.99) == pytest.approx(1.0)
    values = [cosine_momentum(k, 100, 0.9) for k in range(101)]
    assert all(b >= a for a, b in itertools.pairwise(values))


# --- MAE -------------------------------------------------------------------------------------------


def reference_mae(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix: bool) -> float:
    total, count = 0.0, 0
    for b in range(pred.shape[0]):
        for n in range(pred.shape[1]):
            if mask[b, n] == 0:
                continue
            t = target[b, n].numpy()
            if norm_pix:
                t = (t - t.mean()) / math.sqrt(t.var(ddof=1) + 1e-6)
            total += float(np.mean((pred[b, n].numpy() - t) ** 2))
            count += 1
    return total / count


@pytest.mark.parametrize("norm_pix", (False, True))
def test_mae_loss_matches_masked_patch_reference(norm_pix: bool) -> None:
    gen = torch.Generator().manual_seed(11)
    pred = torch.randn(3, 8, 12, generator=gen, dtype=torch.float64)
    target = torch.rand(3, 8, 12, generator=gen, dtype=torch.float64) * 4
    mask = (torch.rand(3, 8, generator=gen) < 0.75).double()
    loss = mae_loss(pred, target, mask, norm_pix)
    assert loss.item() == pytest.approx(reference_mae(pred, target, mask, norm_pix), rel=1e-10)
    edited = pred.clone()
    edited[mask == 0] += 100.0  # visible patches do not count
    assert mae_loss(edited, target, mask, norm_pix).item() == pytest.approx(loss.item(), rel=1e-12)
    assert_gradients_flow(lambda p: mae_loss(p, target, mask, norm_pix), pred)
    assert mae_loss(pred, target, torch.zeros(3, 8), norm_pix).item() == 0.0


# --- U-MAE uniformity ------------------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "dim"), [(5, 9), (9, 5)])
def test_uniformity_penalty_matches_double_loop(batch: int, dim: int) -> None:
    z = features(batch, dim, seed=12)
    a = unit_rows(z)
    expected = sum(float(a[i] @ a[j]) ** 2 for i in range(batch) for j in range(batch) if i != j)
    assert uniformity_penalty(z).item() == pytest.approx(expected, rel=1e-10)
    assert uniformity_penalty(7 * z).item() == pytest.approx(expected, rel=1e-10)
    assert uniformity_penalty(orthonormal_rows(5, 9, seed=13)).item() == pytest.approx(0.0, abs=1e-12)
    assert uniformity_penalty(torch.ones(4, 3)).item() == pytest.approx(12.0)
    assert_gradients_flow(uniformity_penalty, z)


# --- M-MAE total coding rate -----------------------------------------------------------------------


@pytest.mark.parametrize(("batch", "dim"), [(6, 10), (10, 6)])
@pytest.mark.parametrize("mu", (0.5, 1.0, 3.0))
def test_tcr_regularizer_conventions_match_their_formulas(batch: int, dim: int, mu: float) -> None:
    z = features(batch, dim, seed=14)
    a = unit_rows(z)
    paper = np.linalg.slogdet(mu * np.eye(dim) + a.T @ a)[1]
    official = np.linalg.slogdet(np.eye(dim) + mu / dim * a.T @ a)[1]
    assert tcr_regularizer(z, mu).item() == pytest.approx(paper, rel=1e-10)
    assert tcr_regularizer(z, mu, "official").item() == pytest.approx(official, rel=1e-9, abs=1e-10)
    mu_prime = dim / mu
    shifted = tcr_regularizer(z, mu_prime, "paper").item() - dim * math.log(mu_prime)
    assert tcr_regularizer(z, mu, "official").item() == pytest.approx(shifted, rel=1e-9, abs=1e-10)


def test_tcr_conventions_share_gradients_when_mu_prime_is_d_over_mu() -> None:
    z = features(8, 6, seed=15)
    grads = []
    for mu, convention in ((2.0, "official"), (6 / 2.0, "paper")):
        leaf = z.clone().requires_grad_()
        tcr_regularizer(leaf, mu, convention).backward()
        grads.append(leaf.grad)
    torch.testing.assert_close(grads[0], grads[1])
    assert_gradients_flow(lambda x: tcr_regularizer(x, 1.0), z)


def test_tcr_is_maximal_for_orthonormal_and_minimal_for_collapsed_features() -> None:
    mu, dim = 1.0, 8
    best = tcr_regularizer(orthonormal_rows(8, dim, seed=16), mu).item()
    collapsed = tcr_regularizer(torch.ones(8, dim), mu).item()
    assert best == pytest.approx(dim * math.log(1 + mu))
    assert collapsed == pytest.approx(math.log(mu + 8))
    assert collapsed < tcr_regularizer(features(8, dim, seed=17), mu).item() < best


def test_tcr_and_uniformity_stay_full_precision_inside_bf16_autocast() -> None:
    torch.manual_seed(0)
    layer = nn.Linear(16, 32)
    x = torch.randn(64, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = layer(x)
        assert z.dtype == torch.bfloat16
        tcr = tcr_regularizer(z, 1.0)
        uniformity = uniformity_penalty(z)
        tcr64 = tcr_regularizer(z.detach().double(), 1.0)
    assert tcr.dtype == torch.float32 and uniformity.dtype == torch.float32 and tcr64.dtype == torch.float64
    exact = tcr_regularizer(z.detach().double(), 1.0).item()
    assert tcr.item() == pytest.approx(exact, rel=1e-5)
    assert uniformity.item() == pytest.approx(uniformity_penalty(z.detach().double()).item(), rel=1e-5)
    tcr.backward()
    assert layer.weight.grad is not None and torch.isfinite(layer.weight.grad).all()


def test_tcr_regularizer_rejects_unknown_convention() -> None:
    with pytest.raises(ValueError, match="convention"):
        tcr_regularizer(torch.ones(2, 2), 1.0, "nope")  # type: ignore[arg-type]
