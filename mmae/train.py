"""``fit``: the one training entry point for every method (MAE, U-MAE, M-MAE, SimCLR, spectral,
Barlow Twins, BYOL).

The loop is short and flat (in the spirit of nanoGPT): fetch a batch, let the method's objective
compute a loss, step AdamW and the warmup+cosine schedule, and hand metrics, checkpoints and status
to the callbacks. Everything method-specific lives in ``mmae.objectives``.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmae.callbacks import Callback, RunInfo, TrainResult
from mmae.checkpoint import capture_rng, last_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from mmae.config import TrainConfig, config_hash
from mmae.data import DatasetBundle, build_datasets, train_batches
from mmae.evaluate import evaluate
from mmae.monitor import InformationMonitor
from mmae.objectives import Objective, StepOutput, build_objective
from mmae.optim import build_optimizer, build_scheduler
from mmae.probe import OnlineProbe
from mmae.runtime import autocast, resolve_device, resolve_precision


@dataclass
class TrainParts:
    """The stateful pieces of a run: everything a checkpoint holds besides the step and the RNGs."""

    objective: Objective
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    probe: OnlineProbe | None

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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so model init and augmentations are reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_parts(config: TrainConfig, bundle: DatasetBundle, device: torch.device) -> TrainParts:
    """Objective, AdamW, warmup+cosine schedule and (when enabled) online probe, on ``device``."""
    objective = build_objective(config, bundle.in_chans, bundle.image_size, bundle.mean, bundle.std)
    objective.to(device)
    optimizer = build_optimizer(objective, config.optim)
    scheduler = build_scheduler(optimizer, config.optim, config.steps)
    probe = None
    if config.monitor.online_probe:
        probe = OnlineProbe(objective.feature_dim, bundle.num_classes, config.monitor.online_probe_lr)
        probe.to(device)
    return TrainParts(objective, optimizer, scheduler, probe)


def _run_info(
    config: TrainConfig, parts: TrainParts, start: int, device: torch.device, precision: str
) -> RunInfo:
    tags = {
        "method": config.method,
        "mu_convention": config.loss.mu_convention,
        "world_size": "1",
        "config_hash": config_hash(config),
    }
    trainable = sum(p.numel() for p in parts.objective.parameters() if p.requires_grad)
    return RunInfo(config.steps, start, parts.objective.monitor_dim, trainable, str(device), precision, tags)


def fit(
    config: TrainConfig, run_dir: Path, callbacks: Sequence[Callback] = (), resume: bool = True
) -> TrainResult:
    """Pretrain ``config.method`` for ``config.steps`` steps, checkpointing into ``run_dir/checkpoints``.

    With ``resume`` and an existing ``last.pt``, training continues exactly where it stopped (same
    batches, masks, augmentations and updates as an uninterrupted run). A callback's ``should_stop``
    ends the run early after a checkpoint. Offline evaluation runs at the end when enabled.
    """
    run_dir, events = Path(run_dir), _Fanout(callbacks)
    device = resolve_device(config)
    precision = resolve_precision(config, device)
    seed_everything(config.seed)
    bundle = build_datasets(config.data, config.seed)
    if len(bundle.train) < config.data.batch_size:
        raise ValueError(f"data.batch_size {config.data.batch_size} exceeds the {len(bundle.train)} "
                         f"training images of '{bundle.name}'")
    parts = build_parts(config, bundle, device)
    monitor = InformationMonitor(config.loss.mu, config.loss.mu_convention)
    step, saved_path = _resume(run_dir, parts, config, events, device) if resume else (0, None)
    saved_step = step if saved_path else None
    for callback in callbacks:
        callback.on_train_start(_run_info(config, parts, step, device, precision))

    batches = train_batches(
        bundle, config.data.batch_size, config.seed, step, device, config.data.num_workers
    )
    stopped = False
    while step < config.steps and not (stopped := events.should_stop()):
        started = time.perf_counter()
        images, labels = next(batches)
        lr = parts.optimizer.param_groups[0]["lr"]
        out = train_step(parts, images, labels, step, config, device, precision)
        step += 1
        if step % config.log_every == 0:
            events.metrics(step, _train_metrics(out, lr, time.perf_counter() - started, step))
        if step % config.monitor.every == 0:
            events.metrics(step, _monitor_metrics(monitor, out, parts.probe))
        if step % config.checkpoint_every == 0 or step == config.steps:
            saved_step, saved_path = step, _checkpoint(run_dir, step, parts, config, events)
    if stopped and saved_step != step:
        saved_path = _checkpoint(run_dir, step, parts, config, events)
    if config.eval.enabled and not stopped:
        events.status("evaluating")
        events.metrics(step, evaluate(parts.objective, bundle, config, device, precision))
    result = TrainResult(step, stopped, dict(events.summary), saved_path)
    for callback in callbacks:
        callback.on_train_end(result)
    return result


def _resume(
    run_dir: Path, parts: TrainParts, config: TrainConfig, events: _Fanout, device: torch.device
) -> tuple[int, Path | None]:
    """Restore ``run_dir``'s last checkpoint into ``parts``; returns (its step, its path), or (0, None)."""
    path = last_checkpoint(run_dir)
    if path is None:
        return 0, None
    state = load_checkpoint(path, device)
    step = parts.restore(state)
    if state["config_hash"] != config_hash(config):
        events.status("checkpoint config differs from the current config", {"path": str(path)})
    events.status(f"resumed from step {step}", {"path": str(path)})
    return step, path


def train_step(
    parts: TrainParts,
    images: torch.Tensor,
    labels: torch.Tensor,
    step: int,
    config: TrainConfig,
    device: torch.device,
    precision: str,
) -> StepOutput:
    """One optimizer step on images [B, C, H, W] (loss under autocast), then EMA and online-probe updates."""
    with autocast(device, precision):
        out = parts.objective(images, step)
    parts.optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if config.optim.grad_clip:
        torch.nn.utils.clip_grad_norm_(parts.objective.parameters(), config.optim.grad_clip)
    parts.optimizer.step()
    parts.scheduler.step()
    parts.objective.after_step(step + 1)
    if parts.probe:
        parts.probe.update(out.features, labels)
    return out


def _checkpoint(run_dir: Path, step: int, parts: TrainParts, config: TrainConfig, events: _Fanout) -> Path:
    path = save_checkpoint(
        run_dir, step, parts.state(step, config), keep=config.checkpoint_keep,
        before_publish=lambda: events.before_checkpoint_publish(step),
    )
    events.checkpoint(step, path)
    return path


def _train_metrics(out: StepOutput, lr: float, seconds: float, step: int) -> dict[str, float]:
    """``train/*`` values as floats; a non-finite loss stops the run with an error naming the step."""
    values = {"train/loss": out.loss.item(), "train/lr": lr, "train/step_time_s": seconds}
    if not math.isfinite(values["train/loss"]):
        raise FloatingPointError(f"non-finite training loss at step {step}")
    values.update({name: value.item() for name, value in out.metrics.items()})
    return values


def _monitor_metrics(
    monitor: InformationMonitor, out: StepOutput, probe: OnlineProbe | None
) -> dict[str, float]:
    """``info/*`` from the step's detached features plus the online probe's running accuracy."""
    values = monitor(out.monitor_views)
    accuracy = probe.read_accuracy() if probe else None
    if accuracy is not None:
        values["probe/online_top1"] = accuracy
    return values
