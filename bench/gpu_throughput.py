"""GPU throughput of MAE and M-MAE pretraining: ViT-B/16 at 224x224, bf16 autocast, 1..N GPUs.

Setting: the paper's ImageNet model (ViT-B/16 encoder, 75% masking; decoder 512 wide, 8 deep, 16 heads,
as in He et al.), synthetic 224x224 RGB images held on the GPU, ``--batch-per-gpu`` images per GPU
(the global batch grows with the GPUs), M-MAE with the TCR term on the all-gathered CLS features.
Each run is a real ``mmae.train.fit`` on k spawned ranks (NCCL, one GPU per rank: the launcher's job
in production, done here with ``torch.cuda.set_device(rank)``), with monitoring, the online probe,
evaluation and mid-run checkpoints off. ``train/step_time_s`` is read every ``--log-every`` steps
(the only point where a step waits for the device); the first interval is warmup.

Reported per method and GPU count: step time, images/s, and model FLOPs utilisation
MFU = (model FLOPs per image x images/s) / (GPUs x peak bf16 FLOP/s). Model FLOPs per image are
counted by ``torch.utils.flop_counter`` on one forward+backward of the objective (matmuls,
convolutions, attention; the optimizer and elementwise work are not model FLOPs). Peak: H100/H200
989 TFLOP/s dense bf16, A100 312, L4 121, else ``--peak-tflops``. Also reported: how often the host
waited for the device during the timed steps (``torch.cuda.set_sync_debug_mode``), which should be
once per ``--log-every`` steps.

A good result: MAE ViT-B/16 bf16 on a recent GPU (A100, H100) reaches >= 40% MFU; M-MAE within 3% of
MAE's step time; images/s growing almost linearly with the GPUs on one NVLink node (>= 90% scaling
efficiency). Lower MFU points to host overhead (syncs, Python), small per-GPU batches or slow kernels.

Run: ``python bench/gpu_throughput.py [--gpus N] [--batch-per-gpu 256]`` on a GPU machine;
``python bench/gpu_throughput.py --smoke`` runs the same code path on the CPU (ViT-tiny at 32x32, gloo,
1 and 2 ranks, 2 timed steps) to check it works, with no meaningful figures.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.flop_counter import FlopCounterMode

from mmae.callbacks import Callback
from mmae.config import TrainConfig
from mmae.data import BatchShard, StepRandom
from mmae.objectives import build_objective
from mmae.runtime import autocast
from mmae.train import fit

METHODS = ("mae", "mmae")
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0}  # dense, no sparsity


def bench_config(method: str, global_batch: int, steps: int, log_every: int, smoke: bool) -> TrainConfig:
    """ViT-B/16 at 224 with MAE's ImageNet decoder in bf16 (or ViT-tiny at 32 on the CPU for ``smoke``)."""
    model = {"size": "base", "patch_size": 16, "decoder_dim": 512, "decoder_depth": 8, "decoder_heads": 16}
    if smoke:
        model = {"size": "tiny", "depth": 2, "patch_size": 4}
    return TrainConfig.model_validate(
        {
            "method": method,
            "device": "cpu" if smoke else "cuda",
            "precision": "fp32" if smoke else "bf16",
            "steps": steps,
            "log_every": log_every,
            "checkpoint_every": steps,
            "data": {
                "dataset": "synthetic",
                "image_size": 32 if smoke else 224,
                "batch_size": global_batch,
                "synthetic_samples": max(global_batch, 16),
            },
            "model": model,
            "monitor": {"every": 10_000_000, "online_probe": False},
            "eval": {"enabled": False},
        }
    )


def model_flops_per_image(config: TrainConfig, device: torch.device, batch: int = 8) -> float:
    """FLOPs of one forward+backward of the objective on ``batch`` images, divided by ``batch``."""
    size = config.data.resolved_image_size
    objective = build_objective(config, 3, size).to(device)
    images = torch.randn(batch, 3, size, size, device=device)
    draws = StepRandom(0, 0, BatchShard.whole(batch), device)
    with FlopCounterMode(display=False) as counter, autocast(device, config.precision):
        objective(images, draws).loss.backward()
    return counter.get_total_flops() / batch


class StepTimes(Callback):
    """``train/step_time_s`` of every log step (each the mean over the steps since the previous one)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "train/step_time_s" in metrics:
            self.seconds.append(metrics["train/step_time_s"])


class SyncWarnings(Callback):
    """Turns CUDA's sync warnings on after the first log step and off at the last one, so the warnings
    recorded in between are the host's waits on the device during the timed steps."""

    def __init__(self, total_steps: int) -> None:
        self.total_steps = total_steps

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if "train/step_time_s" in metrics:
            torch.cuda.set_sync_debug_mode("warn" if step < self.total_steps else "default")


def run_rank(rank: int, world: int, port: int, config_json: str, out: str) -> None:
    """One rank: its GPU, the process group, ``fit``; rank 0 writes its host-wait count and step times."""
    config = TrainConfig.model_validate_json(config_json)
    smoke = config.device == "cpu"
    if smoke:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    else:
        torch.cuda.set_device(rank)
    backend = "gloo" if smoke else "nccl"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    times = StepTimes()
    callbacks = [times] if smoke else [times, SyncWarnings(config.steps)]
    with tempfile.TemporaryDirectory() as run_dir, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(config, Path(run_dir), callbacks)
    if rank == 0:
        waits = -1 if smoke else sum("synchroniz" in str(warning.message) for warning in caught)
        Path(out).write_text(" ".join(map(str, [waits, *times.seconds])))
    dist.destroy_process_group()


def measure(config: TrainConfig, world: int) -> tuple[float, int]:
    """(median seconds per step after the first log interval, host waits on the device while timed;
    -1 on the CPU)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "times")
        mp.spawn(run_rank, (world, port, config.model_dump_json(), out), nprocs=world)
        waits, *seconds = (float(value) for value in Path(out).read_text().split())
    return statistics.median(seconds[1:]), int(waits)


def peak_flops(args: argparse.Namespace) -> float | None:
    """Peak dense bf16 FLOP/s of one GPU: ``--peak-tflops`` or the table by device name; None if unknown."""
    if args.peak_tflops:
        return args.peak_tflops * 1e12
    if args.smoke:
        return None
    name = torch.cuda.get_device_name()
    return next((tflops * 1e12 for key, tflops in PEAK_BF16_TFLOPS.items() if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model on the CPU, 2 timed steps")
    parser.add_argument("--gpus", type=int, default=None, help="largest GPU count (default: all visible)")
    parser.add_argument("--batch-per-gpu", type=int, default=256)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak dense bf16 TFLOP/s of one GPU")
    args = parser.parse_args()
    if args.smoke:
        args.batch_per_gpu, args.steps, args.log_every, counts = 8, 3, 1, [1, 2]
    else:
        counts = list(range(1, (args.gpus or torch.cuda.device_count()) + 1))
    device = torch.device("cpu" if args.smoke else "cuda")
    peak = peak_flops(args)
    label = "CPU smoke: ViT-tiny 32x32 fp32" if args.smoke else f"{torch.cuda.get_device_name()}: ViT-B/16 224 bf16"
    print(
        f"torch {torch.__version__}, {label}, {args.batch_per_gpu} images per rank, peak "
        f"{peak / 1e12 if peak else 'unknown'} TFLOP/s"
    )
    for method in METHODS:
        flops = model_flops_per_image(bench_config(method, 8, 1, 1, args.smoke), device)
        for world in counts:
            config = bench_config(method, args.batch_per_gpu * world, args.steps, args.log_every, args.smoke)
            seconds, waits = measure(config, world)
            images = config.data.batch_size / seconds
            mfu = f"{100 * flops * images / (world * peak):.1f}%" if peak else "n/a"
            syncs = f"{waits} host waits on the device" if waits >= 0 else "host waits not counted (CPU)"
            print(
                f"{method:>4} x{world}: {seconds * 1e3:.1f} ms/step, {images:.0f} images/s, "
                f"{flops / 1e9:.2f} GFLOP/image, MFU {mfu}, {syncs} in {args.steps - args.log_every} timed steps"
            )


if __name__ == "__main__":
    os.environ.setdefault("NCCL_DEBUG", "WARN")
    main()
