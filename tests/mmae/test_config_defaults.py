"""Paper-faithful defaults (issue 9 part 1), and configs stored before them keep meaning the same run."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from mmae.config import TrainConfig, apply_overrides, config_hash
from mmae.info import equivalent_mu, official_total_coding_rate, total_coding_rate

# TrainConfig(method="umae").model_dump(mode="json") as commit 46fb9c0 (before these defaults) stored it in
# every job row: the full dump, defaults included, with the old absolute uniformity_gamma.
STORED_BEFORE: dict[str, Any] = json.loads((Path(__file__).parents[1] / "stored_config_before_issue9.json").read_text())


def test_defaults_are_the_papers_experiments() -> None:
    loss = TrainConfig().loss
    assert loss.mu_convention == "official" and loss.mu == 1.0 and loss.tcr_lambda == 0.01
    gamma = loss.uniformity_lambda / TrainConfig().data.batch_size ** 2
    assert gamma == pytest.approx(0.01 / 256**2)  # the U-MAE baseline's lamb = 0.01 on a 256 batch


def test_a_stored_config_keeps_its_convention_and_uniformity_weight() -> None:
    assert STORED_BEFORE["loss"] | {"mu_convention": "paper", "uniformity_gamma": 1.5e-5} == STORED_BEFORE["loss"]
    old = TrainConfig.model_validate(STORED_BEFORE)
    assert old.loss.mu_convention == "paper"
    assert old.loss.uniformity_lambda / old.data.batch_size**2 == pytest.approx(1.5e-5, rel=1e-12)
    again = TrainConfig.model_validate(old.model_dump(mode="json"))
    assert again == old and config_hash(again) == config_hash(old)


def test_an_old_gamma_uses_the_configs_own_batch() -> None:
    config = TrainConfig.model_validate({"data": {"batch_size": 64}, "loss": {"uniformity_gamma": 2e-4}})
    assert config.loss.uniformity_lambda == pytest.approx(2e-4 * 64**2)
    assert TrainConfig.model_validate({"loss": {"uniformity_gamma": 1e-5}}).loss.uniformity_lambda == (
        pytest.approx(1e-5 * 256**2)
    )


@pytest.mark.parametrize(
    ("loss", "message"),
    [
        ({"uniformity_gamma": 1e-5, "uniformity_lambda": 0.01}, "set loss.uniformity_lambda only"),
        ({"uniformity_gamma": "strong"}, "loss.uniformity_gamma and data.batch_size must be numbers"),
    ],
)
def test_an_ambiguous_uniformity_weight_is_refused(loss: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TrainConfig.model_validate({"loss": loss})


def test_the_gamma_spelling_is_not_a_sweepable_field() -> None:
    with pytest.raises(ValueError, match=r"unknown config field 'loss\.uniformity_gamma'"):
        apply_overrides(TrainConfig(), {"loss.uniformity_gamma": 1e-5})


@pytest.mark.parametrize("dim", [64, 192, 768])
def test_equivalent_mu_maps_one_convention_onto_the_other(dim: int) -> None:
    z = F.normalize(torch.randn(96, dim, generator=torch.Generator().manual_seed(dim), dtype=torch.float64), dim=1)
    for official in (0.1, 1.0, 3.0):
        paper = equivalent_mu(official, dim)
        assert equivalent_mu(paper, dim) == pytest.approx(official)
        shifted = total_coding_rate(z, paper) - dim * math.log(paper)
        assert official_total_coding_rate(z, official).item() == pytest.approx(shifted.item(), rel=1e-10)
    with pytest.raises(ValueError, match="mu must be positive"):
        equivalent_mu(0.0, dim)
    with pytest.raises(ValueError, match="dim must be a positive feature width"):
        equivalent_mu(1.0, 0)
