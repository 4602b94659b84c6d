"""The tiny training run the tests share: M-MAE on the bundled 8x8 digits with a one-block ViT and a
one-block decoder, 20 steps, seconds of CPU. A test changes only what it is about: ``tiny(steps=4)``,
``tiny(method="mae", **{"eval.enabled": False})``."""

from __future__ import annotations

import copy
from typing import Any

TINY: dict[str, Any] = {
    "method": "mmae",
    "steps": 20,
    "checkpoint_every": 10,
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"depth": 1, "decoder_dim": 32, "decoder_depth": 1},
    "monitor": {"every": 5},
    "eval": {"linear_epochs": 2},
}


def tiny(**changes: Any) -> dict[str, Any]:
    """A fresh copy of ``TINY`` with ``changes`` set by dotted field name (``"loss.mu"``, ``"steps"``); a
    misspelt field surfaces when the config is validated (``TrainConfig`` forbids unknown fields)."""
    config = copy.deepcopy(TINY)
    for dotted, value in changes.items():
        *sections, field = dotted.split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[field] = value
    return config
