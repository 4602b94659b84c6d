"""InformationMonitor: every contract metric, finite on healthy and collapsed features, correct values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmae.callbacks import Callback
from mmae.info import gram_matrix, matrix_entropy, matrix_js, mutual_information
from mmae.monitor import InformationMonitor
from mmae.train import fit

SINGLE = {"info/tcr", "info/entropy_a1", "info/erank", "info/erank_centered"}
PAIR = (
    SINGLE
    | {"info/erank_target"}
    | {
        f"info/{kind}_{m}{suffix}"
        for m in ("corr", "gram")
        for kind, suffixes in (
            ("mi", ("_a1", "_a2")),
            ("joint_entropy", ("_a1", "_a2")),
            ("js", ("",)),
            ("eigen_js", ("",)),
        )
        for suffix in suffixes
    }
)


def test_pair_names_match_the_contract():
    assert len(PAIR) == 17
    assert "info/joint_entropy_gram_a2" in PAIR and "info/eigen_js_corr" in PAIR


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.randn(64, 32),
        lambda: torch.ones(64, 32),  # fully collapsed
        lambda: torch.randn(64, 3) @ torch.randn(3, 32),  # rank 3
    ],
    ids=["gaussian", "collapsed", "rank3"],
)
def test_all_metrics_present_and_finite(make):
    torch.manual_seed(0)
    monitor = InformationMonitor(mu=1.0, convention="paper")
    single = monitor((make(),))
    pair = monitor((make(), make() + 0.1 * torch.randn(64, 32)))
    assert single.keys() == SINGLE and pair.keys() == PAIR
    assert all(math.isfinite(v) for v in (*single.values(), *pair.values()))


def direct_erank_of(a: torch.Tensor) -> float:
    """Def. 5.1 by hand: numpy SVD of ``a``, exp of the Shannon entropy of sigma / sum sigma."""
    sigma = np.linalg.svd(a.double().numpy(), compute_uv=False)
    p = sigma / sigma.sum()
    return math.exp(-sum(pi * math.log(pi) for pi in p if pi > 0))


def direct_erank(z: torch.Tensor) -> float:
    """Def. 5.1 of the l2-normalised rows of ``z``."""
    return direct_erank_of(torch.nn.functional.normalize(z.double(), dim=1))


def test_single_branch_values_match_the_definitions():
    z = torch.randn(48, 16, generator=torch.Generator().manual_seed(1))
    values = InformationMonitor(mu=2.0, convention="paper")((z,))
    k = gram_matrix(z)
    assert values["info/entropy_a1"] == pytest.approx(matrix_entropy(k).item(), rel=1e-9)
    assert values["info/erank"] == pytest.approx(direct_erank(z), rel=1e-6)
    assert values["info/erank"] > math.exp(values["info/entropy_a1"])  # sigma weights spread more than sigma^2
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    tcr = torch.logdet(2.0 * torch.eye(16, dtype=torch.float64) + zn.T @ zn).item()
    assert values["info/tcr"] == pytest.approx(tcr, rel=1e-5)


@pytest.mark.parametrize(("batch", "dim"), [(256, 192), (64, 128), (200, 64)])
def test_erank_is_def_5_1_of_the_normalised_features(batch, dim):
    gen = torch.Generator().manual_seed(batch + dim)
    z = torch.randn(batch, dim, generator=gen) * (torch.rand(dim, generator=gen) ** 2 + 0.01)  # anisotropic
    z = z * torch.rand(batch, 1, generator=gen) * 50  # row norms must not matter
    target = z + 0.5 * torch.randn(batch, dim, generator=gen)
    values = InformationMonitor(mu=1.0, convention="official")((z, target))
    assert values["info/erank"] == pytest.approx(direct_erank(z), rel=1e-6)
    assert values["info/erank_target"] == pytest.approx(direct_erank(target), rel=1e-6)
    assert 1.0 < values["info/erank"] < min(batch, dim)


def test_erank_counts_the_directions_of_low_rank_float32_features():
    gen = torch.Generator().manual_seed(4)
    z = torch.randn(128, 3, generator=gen) @ torch.linalg.qr(torch.randn(64, 3, generator=gen))[0].T
    values = InformationMonitor(mu=1.0, convention="paper")((z,))
    assert values["info/erank"] <= 3.0 + 1e-9  # float32 round-off adds no directions
    assert values["info/erank"] == pytest.approx(direct_erank(z), rel=1e-5)


def test_centered_erank_counts_the_directions_features_vary_in_around_a_shared_mean():
    """A big shared direction (as on MAE's CLS tokens) keeps Def. 5.1 near 1; the centred rank sees the rest."""
    gen = torch.Generator().manual_seed(5)
    basis = torch.linalg.qr(torch.randn(192, 8, generator=gen))[0].T  # orthonormal rows [8, 192]
    z = 100.0 * basis[0] + torch.randn(256, 7, generator=gen) @ basis[1:]  # mean on one axis, 7 others vary
    values = InformationMonitor(mu=1.0, convention="official")((z,))
    assert values["info/erank"] < 1.5
    zn = torch.nn.functional.normalize(z.double(), dim=1)
    assert values["info/erank_centered"] == pytest.approx(direct_erank_of(zn - zn.mean(dim=0)), rel=1e-4)
    assert 6.5 < values["info/erank_centered"] < 7.1  # row normalisation bends the 7 axes a little


@pytest.mark.parametrize("noise", [0.0, 1e-6])
def test_one_point_has_centered_erank_one_even_with_rounding_noise(noise):
    z = torch.randn(192, generator=torch.Generator().manual_seed(6)).expand(128, 192).clone()
    z += noise * torch.randn(128, 192, generator=torch.Generator().manual_seed(7))
    values = InformationMonitor(mu=1.0, convention="official")((z,))
    assert values["info/erank_centered"] == 1.0 and values["info/erank"] == pytest.approx(1.0)


def test_pair_values_match_the_definitions():
    gen = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(40, 24, generator=gen), torch.randn(40, 24, generator=gen)
    values = InformationMonitor(mu=1.0, convention="paper")((z1, z1 + 0.5 * z2))
    k1, k2 = gram_matrix(z1), gram_matrix(z1 + 0.5 * z2)
    assert values["info/mi_gram_a2"] == pytest.approx(mutual_information(k1, k2, 2.0).item(), rel=1e-9)
    assert values["info/js_gram"] == pytest.approx(matrix_js(k1, k2).item(), rel=1e-9, abs=1e-12)
    assert 0 < values["info/mi_gram_a1"] <= math.log(40)


def test_identical_branches_have_zero_divergence():
    z = torch.randn(32, 16, generator=torch.Generator().manual_seed(3))
    values = InformationMonitor(mu=1.0, convention="paper")((z, z.clone()))
    assert values["info/js_corr"] == pytest.approx(0.0, abs=1e-9)
    assert values["info/eigen_js_gram"] == pytest.approx(0.0, abs=1e-9)
    assert values["info/erank_target"] == pytest.approx(values["info/erank"])


def test_orthogonal_features_have_full_effective_rank():
    values = InformationMonitor(mu=1.0, convention="paper")((torch.eye(16),))
    assert values["info/erank"] == pytest.approx(16.0)
    assert values["info/entropy_a1"] == pytest.approx(math.log(16))


@pytest.mark.parametrize(("method", "names"), [("mae", SINGLE), ("simclr", PAIR)])
@pytest.mark.slow
def test_fit_emits_every_monitor_metric(method, names, tiny_config, tmp_path):
    emitted: dict[str, float] = {}

    class Collect(Callback):
        def on_metrics(self, step, metrics):
            emitted.update(metrics)

    fit(tiny_config(method, steps=5), tmp_path, [Collect()])
    info = {k for k in emitted if k.startswith("info/")}
    assert info == names
    assert 0.0 <= emitted["probe/online_top1"] <= 1.0
    assert all(math.isfinite(emitted[name]) for name in names)
