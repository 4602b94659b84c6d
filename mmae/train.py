"""``fit``: the one training entry point for every method (MAE, U-MAE, M-MAE, SimCLR, spectral,
Barlow Twins, BYOL), in one process or as one job over many (data parallelism).

The loop is short and flat (in the spirit of nanoGPT): fetch a batch, let the method's objective
compute a loss, step AdamW and the warmup+cosine schedule, and hand metrics, checkpoints and status
to the callbacks. Everything method-specific lives in ``mmae.objectives``.

Data parallelism: when ``torch.distributed`` is initialised (torchrun, Ray Train, ``mp.spawn``; gloo
on CPU, NCCL on CUDA; the launcher sets each rank's device), every rank calls ``fit`` with the same
config, and N ranks compute what one process computes on the whole batch (``mmae.distributed``):

- ``data.batch_size`` is the global batch. Each rank trains on a disjoint, step-exact shard of it;
  masks and augmentations are drawn for the whole global batch from a generator seeded by
  ``(seed, step)`` and sliced (``mmae.data.global_batch``), in one process too.
- The objective runs under DDP (gradients averaged over ranks, overlapped with the backward). Losses
  that couple samples (TCR, uniformity, InfoNCE, spectral, Barlow Twins) see features gathered over
  ranks with their gradient, and BatchNorm uses global statistics (``GlobalBatchNorm``), so one step
  on N ranks gives the parameters of one step in one process, and every rank holds the same state.
- Only rank 0 calls the callbacks, reads and writes ``run_dir``, monitors information (on the gathered
  global features) and evaluates at the end while the others wait for its summary. It decides when
  to stop, and on resume it sends its ``last.pt`` state to the others, so resume is exact at the same
  world size with the files on rank 0 only. If a callback raises on rank 0, the launcher must end the
  other ranks (torchrun and Ray Train do).
- Tags record ``world_size`` and, for M-MAE / U-MAE, that lambda / gamma weigh the regulariser of the
  global batch with its full gradient (``tcr_gather`` / ``uniformity_gather``).

On CUDA no step waits for the device: losses and metrics stay there and are read (averaged over ranks,
checked for non-finite values) every ``log_every`` steps; batches are copied without blocking.
"""

from __future__ import annotations

import io
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from mmae.callbacks import Callback, RunInfo, TrainResult
from mmae.checkpoint import capture_rng, last_checkpoint, restore_rng, save_checkpoint
from mmae.config import TrainConfig, config_hash
from mmae.data import BatchShard, DatasetBundle, StepRandom, build_datasets, train_batches
from mmae.distributed import SINGLE_PROCESS, Ranks, gather_rows, joined_ranks, mean_over_ranks
from mmae.evaluate import evaluate
from mmae.models import local_statistics, to_global_batchnorm
from mmae.monitor import InformationMonitor
from mmae.objectives import Objective, StepOutput, build_objective
from mmae.optim import build_optimizer, build_scheduler
from mmae.probe import OnlineProbe, frozen_features
from mmae.runtime import autocast, resolve_device, resolve_precision

# Run tag saying what the regulariser's weight multiplies: the term of the whole global batch, whose
# gradient reaches every rank in full (unlike the official M-MAE GatherLayer, where lambda shrinks by N).
GATHER_TAGS = {"mmae": "tcr_gather", "umae": "uniformity_gather"}
GLOBAL_BATCH_FULL_GRADIENT = "global-batch,full-gradient"


@dataclass
class TrainParts:
    """The stateful pieces of a run (everything a checkpoint holds besides the step and the RNGs) and
    how this rank computes a step."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    probe: OnlineProbe | None
    shard: BatchShard  # this rank's rows of every global batch
    forward: nn.Module  # computes a step's StepOutput: the objective itself, or DDP around it

    def state(self, step: int, config: TrainConfig) -> dict[str, Any]:
        """Checkpoint contents after ``step`` completed steps (plain tensors, numbers and strings)."""
        return {
            "step": step,
            "config": config.model_dump(mode="json"),
            "config_hash": config_hash(config),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "probe": self.probe.full_state() if self.probe else None,
            "rng": capture_rng(),
        }

    def restore(self, state: dict[str, Any]) -> int:
        """Load a checkpoint's weights, optimizer, schedule, probe and RNGs; returns its step."""
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.probe and state["probe"]:
            self.probe.load_full_state(state["probe"])
        restore_rng(state["rng"])
        return int(state["step"])


class _Fanout:
    """Sends each event to every callback and remembers the last value of every metric."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = tuple(callbacks)
        self.summary: dict[str, float] = {}

    def train_start(self, info: RunInfo) -> None:
        for callback in self.callbacks:
            callback.on_train_start(info)

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self.summary.update(values)
        for callback in self.callbacks:
            callback.on_metrics(step, values)

    def status(self, message: str, details: dict[str, Any] | None = None) -> None:
        for callback in self.callbacks:
            callback.on_status(message, details)

    def before_checkpoint_publish(self, step: int) -> None:
        for callback in self.callbacks:
            callback.before_checkpoint_publish(step)

    def checkpoint(self, step: int, path: Path) -> None:
        for callback in self.callbacks:
            callback.on_checkpoint(step, path)

    def should_stop(self) -> bool:
        return any(callback.should_stop() for callback in self.callbacks)

    def train_end(self, result: TrainResult) -> None:
        for callback in self.callbacks:
            callback.on_train_end(result)


class _LogClock:
    """Mean wall time per step between log steps (reading the metrics there waits for the device)."""

    def __init__(self, step: int) -> None:
        self.step, self.time = step, time.perf_counter()

    def seconds_per_step(self, step: int) -> float:
        """Seconds per step since the previous call (or since the clock started)."""
        now = time.perf_counter()
        seconds = (now - self.time) / (step - self.step)
        self.step, self.time = step, now
        return seconds


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so model initialisation is reproducible (and equal on
    every rank). Masks and augmentations do not use these generators (``StepRandom``)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_parts(
    config: TrainConfig, bundle: DatasetBundle, device: torch.device, ranks: Ranks = SINGLE_PROCESS
) -> TrainParts:
    """Objective, AdamW, warmup+cosine schedule and (when enabled) online probe, on ``device``.

    With more than one rank: BatchNorm layers become ``GlobalBatchNorm`` and the objective's step runs
    under DDP; ``ValueError`` when ``data.batch_size`` does not split equally over the ranks.
    """
    shard = ranks.shard(config.data.batch_size)
    objective = build_objective(config, bundle.in_chans, bundle.image_size, bundle.mean, bundle.std)
    if ranks.world_size > 1:
        to_global_batchnorm(objective)
    objective.to(device)
    optimizer = build_optimizer(objective, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    probe = None
    if config.monitor.online_probe:
        probe = OnlineProbe(objective.feature_dim, bundle.num_classes, config.monitor.online_probe_lr)
        probe.to(device)
    return TrainParts(objective, optimizer, scheduler, probe, shard, _data_parallel(objective, device, ranks))


def _data_parallel(objective: Objective, device: torch.device, ranks: Ranks) -> nn.Module:
    """DDP around ``objective`` when there are several ranks, else the objective itself.

    Buffers (BatchNorm running statistics of the global batch) are equal on every rank by construction,
    so DDP never broadcasts them.
    """
    if ranks.world_size == 1:
        return objective
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(objective, device_ids=device_ids, forward_sync_buffers=False)


def _run_info(
    config: TrainConfig, parts: TrainParts, start: int, device: torch.device, precision: str, ranks: Ranks
) -> RunInfo:
    tags = {
        "method": config.method,
        "mu_convention": config.loss.mu_convention,
        "world_size": str(ranks.world_size),
        "config_hash": config_hash(config),
    }
    if config.method in GATHER_TAGS:
        tags[GATHER_TAGS[config.method]] = GLOBAL_BATCH_FULL_GRADIENT
    trainable = sum(p.numel() for p in parts.objective.parameters() if p.requires_grad)
    return RunInfo(
        config.steps,
        start,
        parts.objective.monitor_dim,
        trainable,
        str(device),
        precision,
        tags,
        batch_size=config.data.batch_size,
    )


def fit(config: TrainConfig, run_dir: Path, callbacks: Sequence[Callback] = (), resume: bool = True) -> TrainResult:
    """Pretrain ``config.method`` for ``config.steps`` steps, checkpointing into ``run_dir/checkpoints``.

    With ``resume`` and an existing ``last.pt``, training continues exactly where it stopped (same
    batches, masks, augmentations and updates as an uninterrupted run). A callback's ``should_stop``
    ends the run early after a checkpoint. Offline evaluation runs at the end when enabled.
    Under ``torch.distributed`` every rank calls this (see the module doc): ``run_dir`` and
    ``callbacks`` are used on rank 0 only, and every rank returns rank 0's summary (the checkpoint
    path is None on the others).
    """
    with joined_ranks() as ranks:
        run = _Run(config, Path(run_dir), callbacks, ranks)
        step, saved_path = run.resume() if resume else (0, None)
        run.events.train_start(_run_info(config, run.parts, step, run.device, run.precision, ranks))
        step, stopped, saved_path = run.train(step, saved_path)
        if config.eval.enabled and not stopped and ranks.is_main:
            run.evaluate(step)
        result = TrainResult(step, stopped, ranks.share(dict(run.events.summary)), saved_path)
        run.events.train_end(result)
        return result


class _Run:
    """One rank's part of a ``fit`` call: its parts, its events (rank 0's callbacks, none elsewhere)."""

    def __init__(self, config: TrainConfig, run_dir: Path, callbacks: Sequence[Callback], ranks: Ranks) -> None:
        self.config, self.run_dir, self.ranks = config, run_dir, ranks
        self.events = _Fanout(callbacks if ranks.is_main else ())
        self.device = resolve_device(config)
        self.precision = resolve_precision(config, self.device)
        seed_everything(config.seed)
        self.bundle = build_datasets(config.data, config.seed)
        if len(self.bundle.train) < config.data.batch_size:
            raise ValueError(
                f"data.batch_size {config.data.batch_size} exceeds the {len(self.bundle.train)} "
                f"training images of '{self.bundle.name}'"
            )
        self.parts = build_parts(config, self.bundle, self.device, ranks)
        self.monitor = InformationMonitor(config.loss.mu, config.loss.mu_convention)

    def resume(self) -> tuple[int, Path | None]:
        """Restore rank 0's ``last.pt`` on every rank; returns (its step, its path on rank 0), or (0, None).

        Rank 0 sends the file's bytes; every rank loads them as ``load_checkpoint`` does (tensors only).
        """
        path = last_checkpoint(self.run_dir) if self.ranks.is_main else None
        raw = self.ranks.share(path.read_bytes() if path else None)
        if raw is None:
            return 0, None
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
        step = self.parts.restore(state)
        if state["config_hash"] != config_hash(self.config):
            self.events.status("checkpoint config differs from the current config", {"path": str(path)})
        self.events.status(f"resumed from step {step}", {"path": str(path)})
        return step, path

    def train(self, step: int, saved_path: Path | None) -> tuple[int, bool, Path | None]:
        """Steps until ``config.steps`` or a stop; returns (final step, stopped early, newest checkpoint)."""
        config, parts, ranks, events = self.config, self.parts, self.ranks, self.events
        saved_step = step if saved_path else None
        batches = train_batches(
            self.bundle,
            config.data.batch_size,
            config.seed,
            step,
            self.device,
            config.data.num_workers,
            parts.shard,
        )
        clock, stopped = _LogClock(step), False
        while step < config.steps and not (stopped := ranks.decide(events.should_stop())):
            images, labels = next(batches)
            lr = parts.optimizer.param_groups[0]["lr"]
            out = train_step(parts, images, labels, step, config, self.device, self.precision)
            step += 1
            if step % config.log_every == 0:
                events.metrics(step, _train_metrics(out, lr, clock, step))
            if ranks.is_main and step % config.monitor.every == 0:
                events.metrics(step, _monitor_metrics(self.monitor, out, parts.probe))
            if ranks.is_main and (step % config.checkpoint_every == 0 or step == config.steps):
                saved_step, saved_path = step, self.checkpoint(step)
        if ranks.is_main and stopped and saved_step != step:
            saved_path = self.checkpoint(step)
        return step, stopped, saved_path

    def checkpoint(self, step: int) -> Path:
        """Rank 0: write and publish the checkpoint of ``step`` (callbacks may veto before it is published)."""
        path = save_checkpoint(
            self.run_dir,
            step,
            self.parts.state(step, self.config),
            keep=self.config.checkpoint_keep,
            before_publish=lambda: self.events.before_checkpoint_publish(step),
        )
        self.events.checkpoint(step, path)
        return path

    def evaluate(self, step: int) -> None:
        """Rank 0 alone: offline evaluation, BatchNorm on local statistics (no other rank takes part)."""
        self.events.status("evaluating")
        with local_statistics(self.parts.objective):
            metrics = evaluate(self.parts.objective, self.bundle, self.config, self.device, self.precision)
        self.events.metrics(step, metrics)


def train_step(
    parts: TrainParts,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    config: TrainConfig,
    device: torch.device,
    precision: str,
) -> StepOutput:
    """One optimizer step on this rank's images [b, C, H, W] (loss under autocast), then EMA and probe.

    Masks and views come from ``StepRandom(config.seed, step)`` for the global batch; under DDP the
    backward averages gradients over ranks, so every rank applies the same update. On monitor steps the
    online probe learns from the global batch's unmasked, un-augmented features and labels [B] on every rank,
    taken from the encoder as the step's forward saw it (weights before this step's update).
    """
    random_draws = StepRandom(config.seed, step, parts.shard, device)
    with autocast(device, precision):
        out = parts.forward(images, random_draws)
    probing = parts.probe is not None and (step + 1) % config.monitor.every == 0
    features = frozen_features(parts.objective, images, device, precision) if probing else None
    parts.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(parts.objective.parameters(), config.optim.grad_clip)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.objective.after_step(step + 1)
    if parts.probe is not None and features is not None:
        parts.probe.update(gather_rows(features), gather_rows(labels))
    return out


def _train_metrics(out: StepOutput, lr: float, clock: _LogClock, step: int) -> dict[str, float]:
    """``train/*`` floats: loss and objective metrics averaged over ranks (one read from the device).

    A non-finite loss stops the run with an error naming the step (on every rank alike).
    """
    names = ["train/loss", *out.metrics]
    shares = torch.stack([out.loss.detach().float(), *(value.float() for value in out.metrics.values())])
    values = dict(zip(names, mean_over_ranks(shares).tolist(), strict=True))
    if not math.isfinite(values["train/loss"]):
        raise FloatingPointError(f"non-finite training loss at step {step}")
    values["train/lr"] = lr
    values["train/step_time_s"] = clock.seconds_per_step(step)
    return values


def _monitor_metrics(monitor: InformationMonitor, out: StepOutput, probe: OnlineProbe | None) -> dict[str, float]:
    """``info/*`` from the step's detached global features plus the online probe's running accuracy."""
    values = monitor(out.monitor_views)
    accuracy = probe.read_accuracy() if probe else None
    if accuracy is not None:
        values["probe/online_top1"] = accuracy
    return values
