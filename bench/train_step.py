"""Step time of MAE, U-MAE and M-MAE, and the overhead of information monitoring (CPU).

Setting: ViT-tiny (192 wide, 12 deep, 3 heads), batch 256, 32x32 RGB images, patch 4 (64 patches,
75% masked), the default decoder; one step = forward, backward, AdamW and schedule updates, exactly
as ``mmae.train.fit`` runs it (``train_step``, online probe off). Methods are interleaved round by
round after warmup (MAE and M-MAE back to back, alternating which goes first), so drift in machine
load hits all of them alike; each figure is a median over rounds, and the M-MAE/MAE ratio is the
median of per-round ratios. The TCR regulariser's own forward+backward time is reported as well:
it is the whole difference between the two steps, and unlike step times it is not swamped by noise
on a shared machine.

Monitoring overhead at the default interval: median monitor call (on the M-MAE step's own CLS
features, timed in the same rounds) / monitor.every / median M-MAE step time; the online probe's work
(an unmasked encoder forward and one probe step, on the same monitor steps) is reported on top.
Targets: ratio <= 1.03, monitoring <= 2%.
Run: ``python bench/train_step.py [--rounds 15]``; the last line is the M-MAE/MAE ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from mmae.config import TrainConfig
from mmae.data import build_datasets
from mmae.losses import tcr_regularizer
from mmae.monitor import InformationMonitor
from mmae.objectives import StepOutput
from mmae.probe import OnlineProbe, frozen_features
from mmae.train import TrainParts, build_parts, seed_everything, train_step

METHODS = ("mae", "umae", "mmae")
# Round orders: MAE and M-MAE always adjacent (their ratio is the headline), each first half the time.
ORDERS = (("mae", "mmae", "umae"), ("mmae", "mae", "umae"), ("umae", "mae", "mmae"), ("umae", "mmae", "mae"))
DEVICE = torch.device("cpu")


def bench_config(method: str, batch_size: int) -> TrainConfig:
    """ViT-tiny on 32x32 synthetic RGB images, patch 4, the method's default loss weights."""
    return TrainConfig.model_validate(
        {
            "method": method,
            "device": "cpu",
            "data": {
                "dataset": "synthetic",
                "image_size": 32,
                "batch_size": batch_size,
                "synthetic_samples": batch_size,
            },
            "model": {"size": "tiny", "patch_size": 4},
            "monitor": {"online_probe": False},
        }
    )


def seconds(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def tcr_forward_backward(cls: torch.Tensor) -> None:
    """The M-MAE regulariser alone on CLS features [B, D]: TCR forward and backward."""
    z = cls.detach().requires_grad_(True)
    tcr_regularizer(z, 1.0, "paper").backward()


def probe_update(parts: TrainParts, probe: OnlineProbe, images: torch.Tensor, labels: torch.Tensor) -> None:
    """The online probe's work on a monitor step, as ``train_step`` does it: unmasked features of the
    batch (frozen encoder forward), then one probe update."""
    probe.update(frozen_features(parts.objective, images, DEVICE, "fp32"), labels)


def measure(rounds: int, warmup: int, batch_size: int) -> dict[str, list[float]]:
    """Interleaved per-round timings: each method's step, plus (after the M-MAE step) one monitor call
    on that step's CLS features, one two-view monitor call on [B, 128] embeddings, and one online
    probe update, so monitoring is timed under the same machine load as the steps it is compared to."""
    parts: dict[str, TrainParts] = {}
    for method in METHODS:
        seed_everything(0)
        config = bench_config(method, batch_size)
        parts[method] = build_parts(config, build_datasets(config.data, 0), DEVICE)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, 32, 32, generator=gen)
    labels = torch.randint(0, 10, (batch_size,), generator=gen)
    pair = (torch.randn(batch_size, 128, generator=gen), torch.randn(batch_size, 128, generator=gen))
    monitor = InformationMonitor(mu=1.0, convention="paper")
    probe = OnlineProbe(192, 10, 1e-2)

    def one_step(method: str, step: int) -> StepOutput:
        config = bench_config(method, batch_size)
        return train_step(parts[method], images, labels, step, config, DEVICE, "fp32")

    for step in range(warmup):
        for method in METHODS:
            one_step(method, step)
    names = (*METHODS, "monitor", "monitor_pair", "probe", "tcr")
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for method in ORDERS[r % len(ORDERS)]:
            start = time.perf_counter()
            out = one_step(method, warmup + r)
            times[method].append(time.perf_counter() - start)
            if method == "mmae":
                times["monitor"].append(seconds(lambda o=out: monitor(o.monitor_views)))
                times["monitor_pair"].append(seconds(lambda: monitor(pair)))
                times["probe"].append(seconds(lambda: probe_update(parts["mmae"], probe, images, labels)))
                times["tcr"].append(seconds(lambda o=out: tcr_forward_backward(o.monitor_views[0])))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
        f"ViT-tiny 32x32 patch 4, {args.rounds} interleaved rounds after {args.warmup} warmup steps"
    )
    times = measure(args.rounds, args.warmup, args.batch_size)
    medians = {name: statistics.median(values) for name, values in times.items()}
    for method in METHODS:
        spread = f"min {min(times[method]):.3f} max {max(times[method]):.3f}"
        print(f"{method:>5} step time: median {medians[method]:.3f} s ({spread})")
    paired = [m / b for m, b in zip(times["mmae"], times["mae"], strict=True)]
    umae = statistics.median(u / b for u, b in zip(times["umae"], times["mae"], strict=True))
    print(f"U-MAE/MAE step-time ratio: {umae:.4f}")
    print(
        f"M-MAE/MAE ratio of medians: {medians['mmae'] / medians['mae']:.4f}, "
        f"of minima: {min(times['mmae']) / min(times['mae']):.4f}"
    )
    print(
        f"TCR regulariser forward+backward alone: {1e3 * medians['tcr']:.2f} ms "
        f"({100 * medians['tcr'] / medians['mae']:.2f}% of the median MAE step)"
    )

    every = bench_config("mmae", args.batch_size).monitor.every
    single, pair, probe, step = (medians[name] for name in ("monitor", "monitor_pair", "probe", "mmae"))
    print(
        f"monitor call: {1e3 * single:.2f} ms (MAE family, one view), {1e3 * pair:.2f} ms "
        f"(Siamese, two views); online probe (unmasked forward + update) {1e3 * probe:.2f} ms"
    )
    print(
        f"monitoring every {every} steps: {100 * single / every / step:.3f}% of M-MAE training time "
        f"(two-view monitor {100 * pair / every / step:.3f}%); "
        f"with the online probe on the same steps: {100 * (single + probe) / every / step:.3f}%"
    )
    print(f"M-MAE/MAE step-time ratio: {statistics.median(paired):.4f}")


if __name__ == "__main__":
    main()
