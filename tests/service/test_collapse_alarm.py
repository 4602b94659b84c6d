"""The collapse alarm (issue 9): relative to min(B, d), raised by a collapsed run, silent on every example.

The rule (``service.views.collapse_of``): the newest Def. 5.1 effective rank of the monitored features
[B, d] below ``collapse_fraction`` x min(B, d), the most directions B features of width d can span.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmae.callbacks import Callback, RunInfo
from mmae.config import TrainConfig
from mmae.train import fit
from service.job_queries import ProgressRow
from service.settings import Settings
from service.views import collapse_of

FRACTION = Settings().collapse_fraction


def progress(batch: int | None, dim: int) -> ProgressRow:
    """A progress row as the job list reads it, with the run info a worker's reporter stores."""
    run_info = {"feature_dim": dim} | ({"batch_size": batch} if batch else {})
    return ProgressRow(step=300, total_steps=300, phase="done", run_info=run_info, summary=None)


def test_the_bound_is_min_of_batch_and_width() -> None:
    narrow_batch = collapse_of(progress(64, 192), 7.0, 0.1)
    assert (narrow_batch.rank_bound, narrow_batch.threshold, narrow_batch.collapsed) == (64, pytest.approx(6.4), False)
    wide_batch = collapse_of(progress(256, 192), 7.0, 0.1)
    assert (wide_batch.rank_bound, wide_batch.threshold, wide_batch.collapsed) == (192, pytest.approx(19.2), True)


@pytest.mark.parametrize("erank", [None, math.nan, math.inf])
def test_no_verdict_before_an_effective_rank_is_measured(erank: float | None) -> None:
    collapse = collapse_of(progress(256, 192), erank, FRACTION)
    assert collapse.collapsed is None and collapse.erank is None and collapse.threshold is None
    assert collapse.rank_bound == 192  # the page states the rule before the first measurement
    assert collapse_of(None, 3.0, FRACTION).collapsed is None


def test_a_run_without_its_batch_size_is_not_judged() -> None:
    """Runs that recorded no batch size measured the Gram-spectrum erank, which this rule does not apply to."""
    collapse = collapse_of(progress(None, 192), 3.0, FRACTION)
    assert collapse.collapsed is None and collapse.erank == 3.0 and collapse.rank_bound is None


class Start(Callback):
    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.erank: list[float] = []

    def on_train_start(self, info: RunInfo) -> None:
        self.info = info

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "info/erank" in metrics:
            self.erank.append(metrics["info/erank"])


def test_a_run_with_a_huge_learning_rate_raises_the_alarm(tmp_path: Path) -> None:
    config = TrainConfig.model_validate(
        {
            "method": "mae",
            "steps": 6,
            "data": {"batch_size": 64},
            "model": {"depth": 1, "decoder_dim": 32, "decoder_depth": 1},
            "optim": {"lr": 10.0, "warmup_steps": 0},
            "monitor": {"every": 3, "online_probe": False},
            "eval": {"enabled": False},
        }
    )
    seen = Start()
    fit(config, tmp_path, [seen])
    assert seen.info is not None and len(seen.erank) == 2
    collapse = collapse_of(progress(config.data.batch_size, seen.info.feature_dim), seen.erank[-1], FRACTION)
    assert collapse.collapsed is True, collapse
    assert seen.erank[-1] < 2.0  # a handful of directions: one
