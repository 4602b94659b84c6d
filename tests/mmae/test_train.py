"""fit(): every method learns, resume is exact, cooperative stop checkpoints, metadata is complete."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from mmae.callbacks import Callback, RunInfo, TrainResult
from mmae.checkpoint import last_checkpoint, load_checkpoint
from mmae.config import OptimConfig, config_hash
from mmae.optim import lr_factor
from mmae.train import fit

METHODS = ["mae", "umae", "mmae", "simclr", "spectral", "barlow_twins", "byol"]


class Recorder(Callback):
    """Keeps every event; optionally asks to stop once ``stop_at`` steps have been reported."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.checkpoints: list[tuple[int, Path, bool]] = []
        self.info: RunInfo | None = None
        self.result: TrainResult | None = None
        self.statuses: list[str] = []

    def on_train_start(self, info: RunInfo) -> None:
        self.info = info

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.checkpoints.append((step, path, path.is_file()))

    def on_status(self, message: str, details: dict | None = None) -> None:
        self.statuses.append(message)

    def should_stop(self) -> bool:
        return self.stop_at is not None and any(step >= self.stop_at for step, _ in self.metrics)

    def on_train_end(self, result: TrainResult) -> None:
        self.result = result

    def series(self, name: str) -> list[float]:
        return [m[name] for _, m in self.metrics if name in m]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.slow
def test_each_method_trains_with_falling_loss(method, tiny_config, tmp_path):
    recorder = Recorder()
    result = fit(tiny_config(method), tmp_path, [recorder])
    losses = recorder.series("train/loss")
    assert len(losses) == 20 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4
    assert result.final_step == 20 and not result.stopped_early
    assert result.last_checkpoint == tmp_path / "checkpoints" / "step_00000020.pt"
    assert result.summary["train/loss"] == losses[-1]


def _final_parameters(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(last_checkpoint(run_dir))["objective"]


@pytest.mark.parametrize("method", ["mmae", "byol"])
@pytest.mark.slow
def test_stop_then_resume_reproduces_the_uninterrupted_run(method, tiny_config, tmp_path):
    config = tiny_config(method)
    straight = Recorder()
    fit(config, tmp_path / "straight", [straight])

    first, second = Recorder(stop_at=7), Recorder()
    stopped = fit(config, tmp_path / "split", [first])
    assert stopped.stopped_early and stopped.final_step == 7
    fit(config, tmp_path / "split", [second])

    assert second.info.start_step == 7
    assert first.series("train/loss") + second.series("train/loss") == straight.series("train/loss")
    expected, actual = _final_parameters(tmp_path / "straight"), _final_parameters(tmp_path / "split")
    assert expected.keys() == actual.keys()
    assert all(torch.equal(expected[name], actual[name]) for name in expected)
    probe = second.series("probe/online_top1")
    assert probe and probe == straight.series("probe/online_top1")[-len(probe) :]


@pytest.mark.slow
def test_resume_from_a_periodic_checkpoint_is_exact(tiny_config, tmp_path):
    config = tiny_config("mmae")
    straight = Recorder()
    fit(config, tmp_path / "straight", [straight])
    resumed_dir = tmp_path / "resumed" / "checkpoints"
    resumed_dir.mkdir(parents=True)
    (resumed_dir / "last.pt").hardlink_to(tmp_path / "straight" / "checkpoints" / "step_00000010.pt")
    resumed = Recorder()
    fit(config, tmp_path / "resumed", [resumed])
    assert resumed.info.start_step == 10
    assert resumed.series("train/loss") == straight.series("train/loss")[10:]
    assert "resumed from step 10" in resumed.statuses


@pytest.mark.slow
def test_cooperative_stop_checkpoints_and_skips_evaluation(tiny_config, tmp_path):
    recorder = Recorder(stop_at=3)
    config = tiny_config("mae", **{"eval.enabled": True})
    result = fit(config, tmp_path, [recorder])
    assert result.stopped_early and result.final_step == 3
    assert recorder.result == result
    assert recorder.checkpoints == [(3, tmp_path / "checkpoints" / "step_00000003.pt", True)]
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 3
    assert not any(name.startswith("eval/") for name in result.summary)


@pytest.mark.slow
def test_checkpoints_every_n_steps_and_at_the_end(tiny_config, tmp_path):
    recorder = Recorder()
    fit(tiny_config("mae", steps=25), tmp_path, [recorder])
    written = [(step, exists) for step, _, exists in recorder.checkpoints]
    assert written == [(10, True), (20, True), (25, True)]
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 25
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))


def test_run_info_records_convention_world_size_and_config_hash(tiny_config, tmp_path):
    recorder = Recorder()
    config = tiny_config("mmae", steps=2, **{"loss.mu_convention": "official"})
    fit(config, tmp_path, [recorder])
    info = recorder.info
    assert info.tags["mu_convention"] == "official"
    assert info.tags["world_size"] == "1"
    assert info.tags["config_hash"] == config_hash(config)
    assert (info.total_steps, info.start_step, info.device, info.precision) == (2, 0, "cpu", "fp32")
    assert info.feature_dim == 192 and info.num_parameters > 0


@pytest.mark.slow
def test_mmae_raises_effective_rank_over_mae(tiny_config, tmp_path):
    eranks = {}
    for method in ("mae", "mmae"):
        recorder = Recorder()
        config = tiny_config(method, **{"loss.tcr_lambda": 0.1, "loss.mu_convention": "paper"})
        fit(config, tmp_path / method, [recorder])
        eranks[method] = recorder.series("info/erank")[-1]
    assert eranks["mmae"] > 2 * eranks["mae"]


@pytest.mark.slow
def test_mmae_logs_reconstruction_and_tcr(tiny_config, tmp_path):
    recorder = Recorder()
    fit(tiny_config("mmae", steps=2, **{"loss.tcr_lambda": 0.5}), tmp_path, [recorder])
    last = recorder.metrics[-1][1] if "train/loss" in recorder.metrics[-1][1] else recorder.metrics[-2][1]
    assert last["train/loss"] == pytest.approx(last["train/mae_loss"] - 0.5 * last["train/tcr"], rel=1e-5)
    assert last["train/lr"] > 0 and last["train/step_time_s"] > 0


@pytest.mark.slow
def test_evaluation_metrics_join_the_summary(tiny_config, tmp_path):
    recorder = Recorder()
    result = fit(tiny_config("mae", steps=5, **{"eval.enabled": True}), tmp_path, [recorder])
    assert {"eval/linear_top1", "eval/knn_top5"} <= result.summary.keys()
    assert recorder.statuses[-1] == "evaluating"


def test_lr_schedule_warms_up_then_decays_to_min_lr():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr=0.1)
    factors = [lr_factor(step, 20, cfg) for step in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in itertools.pairwise(factors[3:]))
    assert factors[20] == pytest.approx(0.1)
