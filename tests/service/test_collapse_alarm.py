"""The collapse alarm (issue 9): relative to min(B - 1, d), raised by a collapsed run, silent on every example.

The rule (``service.api.views.collapse_of``): the newest ``info/erank_centered`` (Def. 5.1 effective rank of the
l2-normalised features less their batch mean) below ``collapse_fraction`` x min(B - 1, d), the most
directions B centred features of width d can vary in.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from mmae.callbacks import Callback, RunInfo
from mmae.config import TrainConfig
from mmae.train import fit
from service.api.views import collapse_of
from service.examples import load_examples
from service.scheduling.sweeps import expand
from service.schemas import SweepCreate
from service.settings import Settings
from service.store.job_queries import NewestRanks, ProgressRow
from tests.tiny_config import tiny

FRACTION = Settings().collapse_fraction

# Every shipped example (sweeps expanded), trained on this machine's CPU as its file says, with the information
# monitor that measures info/erank_centered (evaluation and the online probe off: they do not touch training):
# its batch B, monitored width d, and the lowest info/erank_centered of any snapshot, the worst value the alarm
# would have judged. simclr, spectral and the temperature sweep ran a complete 100-step schedule instead of 300
# steps (CPU time).
EXAMPLE_RUNS: dict[str, tuple[int, int, float]] = {
    "barlow_twins": (256, 128, 13.86),
    "byol": (256, 128, 12.98),
    "digits_mmae": (256, 192, 13.46),  # the README's first job; 59.55 at its end
    "mae": (256, 192, 12.52),
    "mmae": (256, 192, 12.74),
    "mu_sweep loss.mu=0.5": (128, 192, 17.33),
    "mu_sweep loss.mu=1.0": (128, 192, 17.35),
    "mu_sweep loss.mu=3.0": (128, 192, 17.50),
    "simclr": (256, 128, 37.13),
    "spectral": (256, 128, 85.02),
    "temperature_sweep loss.temperature=0.1": (128, 64, 33.06),
    "temperature_sweep loss.temperature=0.2": (128, 64, 31.60),
    "temperature_sweep loss.temperature=0.5": (128, 64, 26.47),
    "temperature_sweep loss.temperature=1.0": (128, 64, 17.57),
    "umae": (256, 192, 13.07),
}


def progress(batch: int | None, dim: int) -> ProgressRow:
    """A progress row as the job list reads it, with the run info a worker's reporter stores."""
    run_info = {"feature_dim": dim} | ({"batch_size": batch} if batch else {})
    return ProgressRow(step=300, total_steps=300, phase="done", run_info=run_info, summary=None)


def test_the_bound_is_min_of_batch_less_one_and_width() -> None:
    narrow_batch = collapse_of(progress(64, 192), NewestRanks(1.5, 7.0), 0.1)
    assert (narrow_batch.rank_bound, narrow_batch.threshold, narrow_batch.collapsed) == (63, pytest.approx(6.3), False)
    wide_batch = collapse_of(progress(256, 192), NewestRanks(1.5, 7.0), 0.1)
    assert (wide_batch.rank_bound, wide_batch.threshold, wide_batch.collapsed) == (192, pytest.approx(19.2), True)
    assert wide_batch.erank == 1.5 and wide_batch.erank_centered == 7.0


@pytest.mark.parametrize("centered", [None, math.nan, math.inf])
def test_no_verdict_before_a_centred_effective_rank_is_measured(centered: float | None) -> None:
    collapse = collapse_of(progress(256, 192), NewestRanks(None, centered), FRACTION)
    assert collapse.collapsed is None and collapse.erank_centered is None and collapse.threshold is None
    assert collapse.rank_bound == 192  # the page states the rule before the first measurement
    assert collapse_of(None, NewestRanks(3.0, 3.0), FRACTION).collapsed is None


def test_a_run_without_its_batch_size_is_not_judged() -> None:
    """Runs that recorded no batch size predate the centred effective rank; their erank is still shown."""
    collapse = collapse_of(progress(None, 192), NewestRanks(3.0, None), FRACTION)
    assert collapse.collapsed is None and collapse.erank == 3.0 and collapse.rank_bound is None


class Seen(Callback):
    def __init__(self) -> None:
        self.info: RunInfo | None = None
        self.ranks: list[NewestRanks] = []

    def on_train_start(self, info: RunInfo) -> None:
        self.info = info

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "info/erank" in metrics:
            self.ranks.append(NewestRanks(metrics["info/erank"], metrics["info/erank_centered"]))


@pytest.mark.slow
def test_a_run_with_a_huge_learning_rate_raises_the_alarm(tmp_path: Path) -> None:
    diverging = {"optim.lr": 10.0, "optim.warmup_steps": 0, "monitor.every": 3, "monitor.online_probe": False}
    config = TrainConfig.model_validate(tiny(method="mae", steps=6, **{**diverging, "eval.enabled": False}))
    seen = Seen()
    fit(config, tmp_path, [seen])
    assert seen.info is not None and len(seen.ranks) == 2
    collapse = collapse_of(progress(config.data.batch_size, seen.info.feature_dim), seen.ranks[-1], FRACTION)
    assert collapse.collapsed is True, collapse


def shipped_runs() -> dict[str, TrainConfig]:
    """Every run the shipped examples make: a job file's config, or each cell of a sweep file."""
    runs = {}
    for name, kind, body in load_examples():
        if kind == "job":
            runs[name] = TrainConfig.model_validate(body["config"])
            continue
        for cell in expand(SweepCreate.model_validate(body), Settings().max_sweep_cells):
            runs[f"{name} " + ",".join(f"{path}={value}" for path, value in cell.params.items())] = cell.config
    return runs


def test_no_shipped_example_raises_the_alarm_at_any_snapshot() -> None:
    runs = shipped_runs()
    assert EXAMPLE_RUNS.keys() == runs.keys(), "a new example needs its measured figure here"
    for name, (batch, dim, lowest) in EXAMPLE_RUNS.items():
        assert batch == runs[name].data.batch_size, name
        collapse = collapse_of(progress(batch, dim), NewestRanks(None, lowest), FRACTION)
        assert collapse.collapsed is False, (name, collapse)
