"""Data-parallel throughput on this machine's CPU: MAE and M-MAE at 1 and 2 gloo ranks.

Setting: ViT-tiny (192 wide, 12 deep, 3 heads), 32x32 synthetic RGB images, patch 4 (64 patches, 75%
masked), the default decoder, global batch 128 (64 rows per rank at 2 ranks); monitoring, the online
probe and evaluation off. Each run is a real ``mmae.train.fit`` (1 rank: the single-process path; 2
ranks: ``torch.multiprocessing`` spawn, gloo on loopback, DDP, the CLS features of M-MAE's TCR term
all-gathered with their gradient). Torch threads per rank = cores / ranks, so both settings use the
whole machine. A step's time is ``train/step_time_s`` (one step per log); the first ``--warmup``
steps are dropped and each figure is the median. MAE and M-MAE alternate round by round so drift in
machine load hits both alike; the M-MAE/MAE ratio is the median of per-round ratios.

Target: M-MAE/MAE step ratio <= 1.03 at 2 ranks (the all-gather of B x d CLS features and the TCR
term must stay cheap next to the encoder and decoder). On a CPU with few cores, 2 ranks are not
expected to beat 1: the point is the ratio, and that the distributed path is not pathologically slow.
Run: ``python bench/scaling.py [--rounds 3 --steps 12]``; the last line is the ratio at 2 ranks.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mmae.callbacks import Callback
from mmae.config import TrainConfig
from mmae.train import fit

METHODS = ("mae", "mmae")


def bench_config(method: str, batch_size: int, steps: int) -> TrainConfig:
    """ViT-tiny on 32x32 synthetic RGB, patch 4; no monitoring, probe, evaluation or mid-run checkpoint."""
    return TrainConfig.model_validate(
        {
            "method": method,
            "device": "cpu",
            "steps": steps,
            "checkpoint_every": steps,
            "data": {"dataset": "synthetic", "image_size": 32, "batch_size": batch_size, "synthetic_samples": 256},
            "model": {"size": "tiny", "patch_size": 4},
            "monitor": {"every": 10_000_000, "online_probe": False},
            "eval": {"enabled": False},
        }
    )


class StepTimes(Callback):
    """Collects ``train/step_time_s`` of every logged step."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "train/step_time_s" in metrics:
            self.seconds.append(metrics["train/step_time_s"])


def run_rank(rank: int, world: int, port: int, config_json: str, out: str) -> None:
    """One rank of a run: join the gloo group (when world > 1), fit, rank 0 writes its step times."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    times = StepTimes()
    with tempfile.TemporaryDirectory() as run_dir:
        fit(TrainConfig.model_validate_json(config_json), Path(run_dir), [times])
    if rank == 0:
        Path(out).write_text(" ".join(map(str, times.seconds)))
    if world > 1:
        dist.destroy_process_group()


def median_step_seconds(config: TrainConfig, world: int, warmup: int) -> float:
    """Median step time of one ``fit`` on ``world`` spawned ranks, after ``warmup`` steps."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "times")
        mp.spawn(run_rank, (world, port, config.model_dump_json(), out), nprocs=world)
        seconds = [float(value) for value in Path(out).read_text().split()]
    return statistics.median(seconds[warmup:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch")
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {os.cpu_count()} cores, ViT-tiny 32x32 patch 4, global batch "
        f"{args.batch_size}, {args.rounds} rounds of {args.steps} steps ({args.warmup} warmup)"
    )
    ratios: dict[int, list[float]] = {1: [], 2: []}
    for world in (1, 2):
        times: dict[str, list[float]] = {method: [] for method in METHODS}
        for r in range(args.rounds):
            for method in METHODS if r % 2 == 0 else reversed(METHODS):
                config = bench_config(method, args.batch_size, args.steps)
                times[method].append(median_step_seconds(config, world, args.warmup))
            ratios[world].append(times["mmae"][-1] / times["mae"][-1])
        for method in METHODS:
            seconds = statistics.median(times[method])
            print(f"{world} rank(s) {method:>4}: {seconds:.3f} s/step, {args.batch_size / seconds:.1f} images/s")
        print(f"{world} rank(s) M-MAE/MAE step-time ratio: {statistics.median(ratios[world]):.4f}")
    print(f"M-MAE/MAE step-time ratio at 2 ranks: {statistics.median(ratios[2]):.4f}")


if __name__ == "__main__":
    main()
