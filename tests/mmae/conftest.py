"""Shared fixtures for the training-layer tests: tiny, fast configs on the bundled digits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmae.config import TrainConfig, apply_overrides
from tests.tiny_config import tiny

# The training tests' run is the shared tiny one with two encoder blocks, a wider decoder, small heads for
# the Siamese methods, a short warmup and no final evaluation (tests that want it turn it on).
TRAINING: dict[str, Any] = {
    "model.depth": 2,
    "model.decoder_dim": 64,
    "model.projector_hidden_dim": 128,
    "model.projector_dim": 64,
    "model.predictor_hidden_dim": 128,
    "optim.warmup_steps": 5,
    "eval.enabled": False,
    "eval.linear_epochs": 5,
}


@pytest.fixture
def tiny_config() -> Callable[..., TrainConfig]:
    """Factory: ``tiny_config("mmae", **{"loss.tcr_lambda": 1.0})`` -> a 20-step digits config."""

    def make(method: str = "mmae", **overrides: Any) -> TrainConfig:
        return apply_overrides(TrainConfig.model_validate(tiny(method=method, **TRAINING)), overrides)

    return make
