"""Shared fixtures for the training-layer tests: tiny, fast configs on the bundled digits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from mmae.config import TrainConfig, apply_overrides

TINY: dict[str, Any] = {
    "steps": 20,
    "checkpoint_every": 10,
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {
        "depth": 2,
        "decoder_dim": 64,
        "decoder_depth": 1,
        "projector_hidden_dim": 128,
        "projector_dim": 64,
        "predictor_hidden_dim": 128,
    },
    "optim": {"warmup_steps": 5},
    "monitor": {"every": 5},
    "eval": {"enabled": False, "linear_epochs": 5},
}


@pytest.fixture
def tiny_config() -> Callable[..., TrainConfig]:
    """Factory: ``tiny_config("mmae", **{"loss.tcr_lambda": 1.0})`` -> a 20-step digits config."""

    def make(method: str = "mmae", **overrides: Any) -> TrainConfig:
        return apply_overrides(TrainConfig.model_validate({**TINY, "method": method}), overrides)

    return make
