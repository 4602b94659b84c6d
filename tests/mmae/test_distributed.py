"""Data parallelism with plain torch.distributed: 2 gloo ranks on CPU train exactly like one process.

One module-scoped fixture spawns the 2 ranks once (torch.multiprocessing, a free loopback port) and runs
every scenario there; each rank saves what it saw. The tests compare that with single-process runs made
in this process while the ranks work. Models are tiny (one ViT block, 8x8 synthetic images, global batch
8) so the whole file takes seconds of compute.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import mmae.objectives.masked
from mmae.callbacks import Callback, RunInfo, TrainResult
from mmae.checkpoint import last_checkpoint, load_checkpoint
from mmae.config import TrainConfig, apply_overrides
from mmae.data import BatchShard, SimCLRAugment, StepRandom, build_datasets, train_batches
from mmae.distributed import SINGLE_PROCESS, Ranks, gather_rows, joined_ranks
from mmae.models import GlobalBatchNorm, to_global_batchnorm
from mmae.objectives import build_objective
from mmae.optim import build_optimizer
from mmae.train import build_parts, fit, seed_everything, train_step

WORLD = 2
METHODS = ["mae", "umae", "mmae", "simclr", "spectral", "barlow_twins", "byol"]
SPAWN_DEADLINE_S = 600
TINY: dict[str, Any] = {
    "steps": 1,
    "checkpoint_every": 100,
    "device": "cpu",
    "data": {"dataset": "synthetic", "batch_size": 8, "synthetic_samples": 32},
    "model": {
        "depth": 1,
        "decoder_dim": 32,
        "decoder_depth": 1,
        "decoder_heads": 2,
        "projector_hidden_dim": 32,
        "projector_dim": 16,
        "predictor_hidden_dim": 32,
    },
    # weights large enough that each regulariser moves the gradient visibly
    "loss": {"tcr_lambda": 1.0, "mu_convention": "paper", "uniformity_lambda": 50.0},
    "optim": {"warmup_steps": 1},
    "monitor": {"every": 1},
    "eval": {"enabled": False, "linear_epochs": 1, "finetune_epochs": 1},
}


def config(method: str, **overrides: Any) -> TrainConfig:
    """A tiny config of ``method`` (ViT backbone; see ``resnet_gradients`` for BatchNorm2d)."""
    return apply_overrides(TrainConfig.model_validate({**TINY, "method": method}), overrides)


class Recorder(Callback):
    """Keeps every event in plain data; asks to stop once ``stop_at`` steps have been reported."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.events: list[str] = []
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.tags: dict[str, str] = {}

    def on_train_start(self, info: RunInfo) -> None:
        self.events.append("start")
        self.tags = info.tags

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self.metrics.append((step, metrics))

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.events.append(f"checkpoint {step}")

    def should_stop(self) -> bool:
        self.events.append("should_stop")
        return self.stop_at is not None and any(step >= self.stop_at for step, _ in self.metrics)

    def on_train_end(self, result: TrainResult) -> None:
        self.events.append("end")

    def record(self) -> dict[str, Any]:
        return {"events": self.events, "metrics": self.metrics, "tags": self.tags}


def official_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Port of the official M-MAE ``GatherLayer``: all-gather forward, but the backward hands each rank
    only the gradient its own loss sent to its own rows (no sum over ranks)."""

    class GatherLayer(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
            gathered = [torch.zeros_like(rows) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, rows.contiguous())
            return tuple(gathered)

        @staticmethod
        def backward(ctx: Any, *grads: torch.Tensor) -> torch.Tensor:
            return grads[dist.get_rank()].clone()

    return torch.cat(GatherLayer.apply(x))


# ---------------------------------------------------------------- what each rank runs


def run_fit(rank: int, folder: Path, cfg: TrainConfig, stop_at: int | None = None) -> dict[str, Any]:
    """``fit`` with a recorder, rank r writing (if at all) only into ``folder/rank{r}``."""
    recorder = Recorder(stop_at)
    result = fit(cfg, folder / f"rank{rank}", [recorder])
    return {"result": (result.final_step, result.stopped_early, result.summary), **recorder.record()}


def official_gather_step(rank: int, folder: Path) -> dict[str, Any]:
    """One M-MAE step with the TCR term gathered by the official GatherLayer instead of ``gather_rows``."""
    honest = mmae.objectives.masked.gather_rows
    mmae.objectives.masked.gather_rows = official_gather_rows
    try:
        return run_fit(rank, folder, config("mmae"))
    finally:
        mmae.objectives.masked.gather_rows = honest


def indivisible_batch(rank: int, folder: Path) -> str:
    with pytest.raises(ValueError) as raised:
        fit(config("mmae", **{"data.batch_size": 9}), folder / f"rank{rank}")
    return str(raised.value)


def resnet_gradients(ranks: Ranks) -> dict[str, torch.Tensor]:
    """Gradients of one Barlow Twins ``train_step`` on the CIFAR ResNet-18 (20 BatchNorm2d layers), in
    float64: at this size float32 rounding, amplified by BatchNorm over few numbers per channel, moves
    the gradient by 1e-2 whether or not the batch is split, hiding what this compares."""
    cfg = config("barlow_twins", **{"model.arch": "resnet18", "monitor.online_probe": False})
    torch.set_default_dtype(torch.float64)
    try:
        seed_everything(cfg.seed)
        bundle = build_datasets(cfg.data, cfg.seed)
        parts = build_parts(cfg, bundle, torch.device("cpu"), ranks)
        images, labels = next(train_batches(bundle, cfg.data.batch_size, cfg.seed, shard=parts.shard))
        train_step(parts, images.double(), labels, 0, cfg, torch.device("cpu"), "fp32")
        return {name: param.grad for name, param in parts.objective.named_parameters() if param.grad is not None}
    finally:
        torch.set_default_dtype(torch.float32)


def rank_weights_after_steps(rank: int, folder: Path) -> dict[str, bool]:
    """Two ``train_step``s of the pieces ``fit`` builds; per method, whether both ranks then hold
    bitwise the same weights and buffers (BatchNorm statistics, BYOL's EMA target)."""
    same = {}
    for method in ("mmae", "barlow_twins", "byol"):
        cfg = config(method)
        with joined_ranks() as ranks:
            seed_everything(cfg.seed)
            bundle = build_datasets(cfg.data, cfg.seed)
            parts = build_parts(cfg, bundle, torch.device("cpu"), ranks)
            batches = train_batches(bundle, cfg.data.batch_size, cfg.seed, shard=parts.shard)
            for step in range(2):
                train_step(parts, *next(batches), step, cfg, torch.device("cpu"), "fp32")
            state = torch.cat([value.flatten().double() for value in parts.objective.state_dict().values()])
            both = gather_rows(state.unsqueeze(0))
            same[method] = torch.equal(both[0], both[1])
    return same


def resumed_after_stop(rank: int, folder: Path) -> dict[str, Any]:
    """Stopped by rank 0 at step 3, then resumed: rank 1 never sees the checkpoint files."""
    cfg = config("mmae", steps=6, checkpoint_every=2)
    first = run_fit(rank, folder, cfg, stop_at=3)
    second = run_fit(rank, folder / "second", cfg) if rank else run_fit(rank, folder, cfg)
    return {"first": first, "second": second}


# Fine-tuning trains a copy of the ResNet (BatchNorm layers in training mode) on rank 0 alone.
EVALUATED_RESNET = {"model.arch": "resnet18", "eval.enabled": True, "data.synthetic_samples": 16}
SCENARIOS: dict[str, Callable[[int, Path], Any]] = {
    **{f"step_{m}": (lambda rank, folder, m=m: run_fit(rank, folder, config(m))) for m in METHODS},
    "step_mmae_official_gather": official_gather_step,
    "weights_after_steps": rank_weights_after_steps,
    "resnet_gradients": lambda rank, folder: with_ranks(resnet_gradients),
    "stop": lambda rank, folder: run_fit(rank, folder, config("mae", steps=10), stop_at=3),
    "straight": lambda rank, folder: run_fit(rank, folder, config("mmae", steps=6, checkpoint_every=2)),
    "resumed": resumed_after_stop,
    "indivisible": indivisible_batch,
    "evaluate": lambda rank, folder: run_fit(rank, folder, config("barlow_twins", **EVALUATED_RESNET)),
}


def with_ranks(run: Callable[[Ranks], Any]) -> Any:
    with joined_ranks() as ranks:
        return run(ranks)


def rank_main(rank: int, port: int, out: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        results = {name: scenario(rank, out / name) for name, scenario in SCENARIOS.items()}
        torch.save(results, out / f"results{rank}.pt")
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- fixtures


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_process_run(folder: Path, cfg: TrainConfig) -> dict[str, Any]:
    recorder = Recorder()
    fit(cfg, folder, [recorder])
    return recorder.record()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """{"two": rank -> scenario -> result, "one": scenario -> single-process record, "dirs": folders}."""
    two_dir, one_dir = tmp_path_factory.mktemp("two_ranks"), tmp_path_factory.mktemp("one_process")
    ranks = mp.start_processes(rank_main, (free_port(), two_dir), nprocs=WORLD, join=False, start_method="spawn")
    try:
        one = {f"step_{m}": single_process_run(one_dir / f"step_{m}", config(m)) for m in METHODS}
        one["resnet_gradients"] = resnet_gradients(SINGLE_PROCESS)
        deadline = time.monotonic() + SPAWN_DEADLINE_S
        while not ranks.join(timeout=1):
            assert time.monotonic() < deadline, "the two ranks did not finish in time (a hang?)"
    finally:
        for process in ranks.processes:
            if process.is_alive():
                process.kill()
    two = [torch.load(two_dir / f"results{rank}.pt", weights_only=False) for rank in range(WORLD)]
    yield {"two": two, "one": one, "dirs": (two_dir, one_dir)}


def rank0_state(folder: Path) -> dict[str, Any]:
    return load_checkpoint(last_checkpoint(folder / "rank0"))


def assert_same_tensors(actual: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], atol: float) -> None:
    """Same names; float tensors agree to rtol 1e-4 plus ``atol``, the others exactly."""
    assert actual.keys() == expected.keys()
    for name, value in expected.items():
        if value.is_floating_point():
            torch.testing.assert_close(actual[name], value, rtol=1e-4, atol=atol, msg=lambda m, n=name: f"{n}: {m}")
        else:
            assert torch.equal(actual[name], value), name


@functools.cache
def optimizer_order(cfg: TrainConfig) -> tuple[str, ...]:
    """Parameter names in the order AdamW's state numbers them (``mmae.optim``'s two groups)."""
    bundle = build_datasets(cfg.data, cfg.seed)
    objective = build_objective(cfg, bundle.in_chans, bundle.image_size, bundle.mean, bundle.std)
    names = {id(param): name for name, param in objective.named_parameters()}
    groups = build_optimizer(objective, cfg.optim).param_groups
    return tuple(names[id(param)] for group in groups for param in group["params"])


def first_moments(state: dict[str, Any], cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """AdamW's exp_avg by parameter name: after one step, (1 - beta1) times the averaged gradient."""
    order = optimizer_order(cfg)
    return {order[index]: entry["exp_avg"] for index, entry in state["optimizer"]["state"].items()}


def assert_same_step(actual: dict[str, Any], expected: dict[str, Any], cfg: TrainConfig) -> None:
    """Gradients (AdamW's first moments) agree to rtol 1e-4 plus 1e-6 of the largest; so do the weights
    wherever the gradient is signal (above 1e-4 of the largest), and all buffers (BatchNorm statistics).

    Elsewhere a weight's gradient is rounding noise (the key bias of attention, a bias feeding a
    BatchNorm: their exact gradient is 0), which Adam's first steps (about lr * sign(g)) blow up to
    lr-sized moves in either process alike; the moments comparison still covers them.
    """
    moments, expected_moments = first_moments(actual, cfg), first_moments(expected, cfg)
    largest = max(m.abs().max().item() for m in expected_moments.values())
    assert_same_tensors(moments, expected_moments, atol=1e-6 * largest)
    weights, expected_weights = actual["objective"], expected["objective"]
    signal = {name: m.abs() > 1e-4 * largest for name, m in expected_moments.items()}
    assert_same_tensors(
        {name: value[signal[name]] if name in signal else value for name, value in weights.items()},
        {name: value[signal[name]] if name in signal else value for name, value in expected_weights.items()},
        atol=1e-6,
    )
    assert sum(mask.sum().item() for mask in signal.values()) > 0.5 * sum(m.numel() for m in signal.values())


def losses(record: dict[str, Any]) -> list[float]:
    """The ``train/loss`` series a recorder saw."""
    return [values["train/loss"] for _, values in record["metrics"] if "train/loss" in values]


# ---------------------------------------------------------------- in-process checks


def test_step_draws_of_a_shard_are_rows_of_the_global_draws() -> None:
    whole = StepRandom(seed=7, step=3, shard=BatchShard.whole(8), device="cpu")
    shards = [StepRandom(seed=7, step=3, shard=BatchShard.of_rank(8, r, 4), device="cpu") for r in range(4)]
    expected = [whole.rand(5), whole.normal(2, 3), whole.uniform(-1.0, 1.0)]
    for rows, shard in zip(range(0, 8, 2), shards, strict=True):
        drawn = [shard.rand(5), shard.normal(2, 3), shard.uniform(-1.0, 1.0)]
        assert all(d.equal(e[rows : rows + 2]) for d, e in zip(drawn, expected, strict=True))


def test_augmented_views_of_shards_are_rows_of_the_global_views() -> None:
    augment = SimCLRAugment(32, 3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randn(6, 3, 16, 16)
    whole = StepRandom(seed=1, step=9, shard=BatchShard.whole(6), device="cpu")
    expected = torch.cat([augment(images, whole), augment(images, whole)], dim=1)
    for rank in range(3):
        shard = BatchShard.of_rank(6, rank, 3)
        draws = StepRandom(seed=1, step=9, shard=shard, device="cpu")
        rows = images[shard.start : shard.stop]
        views = torch.cat([augment(rows, draws), augment(rows, draws)], dim=1)
        torch.testing.assert_close(views, expected[shard.start : shard.stop], rtol=0, atol=1e-6)


def test_global_batchnorm_conversion_keeps_state_and_frozen_parameters() -> None:
    frozen = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).requires_grad_(False)
    frozen[1].running_mean.fill_(0.5)
    converted = to_global_batchnorm(frozen)
    assert isinstance(converted[1], GlobalBatchNorm) and converted[1].running_mean.eq(0.5).all()
    assert not any(p.requires_grad for p in converted.parameters())
    x = torch.randn(6, 3)
    assert torch.equal(
        converted(x),
        torch.nn.functional.batch_norm(frozen[0](x), None, None, converted[1].weight, converted[1].bias, training=True),
    )


def test_a_batch_that_does_not_split_names_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"data.batch_size 10 is not divisible by the world size 4"):
        BatchShard.of_rank(10, 0, 4)


# ---------------------------------------------------------------- two ranks against one process


@pytest.mark.parametrize("method", METHODS)
def test_two_ranks_take_the_same_steps_as_one_process(method: str, runs: dict[str, Any]) -> None:
    """One optimizer step on 2 ranks x 4 rows = one step of one process on the 8 rows: gradients (AdamW
    moments, so their scale too), weights, BatchNorm statistics, the online probe and the loss."""
    name = f"step_{method}"
    two_dir, one_dir = runs["dirs"]
    actual, expected = rank0_state(two_dir / name), load_checkpoint(last_checkpoint(one_dir / name))
    assert actual["step"] == expected["step"] == 1
    assert_same_step(actual, expected, config(method))
    assert_same_tensors(actual["probe"]["module"], expected["probe"]["module"], atol=1e-6)
    assert losses(runs["two"][0][name]) == pytest.approx(losses(runs["one"][name]), rel=1e-5)
    assert not (two_dir / name / "rank1").exists()


def test_official_gather_layer_divides_the_tcr_gradient_by_the_world_size(runs: dict[str, Any]) -> None:
    """The official GatherLayer drops the other rank's share of the TCR gradient: after DDP's mean, the
    TCR part of the gradient is 1/2 of the single-process one, so the step no longer matches."""
    two_dir, one_dir = runs["dirs"]
    cfg = config("mmae")  # same parameters, in the same order, as the MAE run

    def flat_moments(state: dict[str, Any]) -> torch.Tensor:
        return torch.cat([m.flatten() for m in first_moments(state, cfg).values()])

    mae, honest, official = (
        flat_moments(rank0_state(two_dir / name)) for name in ("step_mae", "step_mmae", "step_mmae_official_gather")
    )
    single_state = load_checkpoint(last_checkpoint(one_dir / "step_mmae"))
    single = flat_moments(single_state)
    tcr_honest, tcr_official, tcr_single = honest - mae, official - mae, single - mae
    assert tcr_single.norm() > 0.1 * mae.norm()  # the TCR term moves the gradient here
    torch.testing.assert_close(tcr_honest, tcr_single, rtol=1e-3, atol=1e-5 * tcr_single.abs().max().item())
    ratio = (tcr_official @ tcr_honest) / (tcr_honest @ tcr_honest)
    assert ratio.item() == pytest.approx(1 / WORLD, abs=0.01)
    with pytest.raises(AssertionError, match="Tensor-likes are not close"):
        assert_same_step(rank0_state(two_dir / "step_mmae_official_gather"), single_state, cfg)


def test_resnet_batchnorm_sees_the_global_batch(runs: dict[str, Any]) -> None:
    """Barlow Twins on ResNet-18 in float64: 2 ranks x 4 rows give one process's gradients on 8 rows
    (wrong BatchNorm statistics, local instead of global, would move them by far more than this)."""
    actual, expected = runs["two"][0]["resnet_gradients"], runs["one"]["resnet_gradients"]
    largest = max(grad.abs().max().item() for grad in expected.values())
    assert_same_tensors(actual, expected, atol=1e-9 * largest)


def test_every_rank_holds_the_same_weights_after_each_step(runs: dict[str, Any]) -> None:
    for rank in range(WORLD):
        assert runs["two"][rank]["weights_after_steps"] == {"mmae": True, "barlow_twins": True, "byol": True}


def test_only_rank_0_calls_callbacks_and_its_stop_stops_every_rank(runs: dict[str, Any]) -> None:
    zero, one = (runs["two"][rank]["stop"] for rank in range(WORLD))
    assert zero["result"][:2] == one["result"][:2] == (3, True)
    assert zero["events"][0] == "start" and zero["events"][-2:] == ["checkpoint 3", "end"]
    assert zero["metrics"] and zero["tags"]["world_size"] == "2"
    assert one == {"events": [], "metrics": [], "tags": {}, "result": one["result"]}
    assert one["result"][2] == zero["result"][2]  # every rank returns rank 0's summary
    assert {"train/loss", "info/erank", "probe/online_top1"} <= zero["result"][2].keys()
    assert not (runs["dirs"][0] / "stop" / "rank1").exists()


def test_resume_at_world_size_two_is_exact_with_the_files_on_rank_0_only(runs: dict[str, Any]) -> None:
    two_dir = runs["dirs"][0]
    straight, first, second = runs["two"][0]["straight"], *runs["two"][0]["resumed"].values()
    assert first["result"][:2] == (3, True) and second["result"][:2] == (6, False)
    assert losses(first) + losses(second) == losses(straight)
    expected, actual = rank0_state(two_dir / "straight"), rank0_state(two_dir / "resumed")
    assert all(torch.equal(actual["objective"][k], expected["objective"][k]) for k in expected["objective"])
    assert runs["two"][1]["resumed"]["second"]["result"][0] == 6
    assert not (two_dir / "resumed" / "second").exists() and not (two_dir / "resumed" / "rank1").exists()


def test_a_batch_size_not_divisible_by_the_ranks_is_refused_on_every_rank(runs: dict[str, Any]) -> None:
    for rank in range(WORLD):
        assert "data.batch_size 9 is not divisible by the world size 2" in runs["two"][rank]["indivisible"]


def test_tags_say_world_size_and_what_lambda_means(runs: dict[str, Any]) -> None:
    tags = runs["two"][0]["step_mmae"]["tags"]
    assert tags["world_size"] == "2" and tags["tcr_gather"] == "global-batch,full-gradient"
    assert runs["two"][0]["step_umae"]["tags"]["uniformity_gather"] == "global-batch,full-gradient"
    assert runs["one"]["step_mmae"]["tags"]["world_size"] == "1"


def test_rank_0_evaluates_alone_and_every_rank_returns_its_summary(runs: dict[str, Any]) -> None:
    """Barlow Twins on a ResNet: fine-tuning trains BatchNorm layers on rank 0 alone without waiting."""
    zero, one = (runs["two"][rank]["evaluate"] for rank in range(WORLD))
    assert {"eval/linear_top1", "eval/knn_top1", "eval/finetune_top1"} <= zero["result"][2].keys()
    assert one["result"] == zero["result"]
