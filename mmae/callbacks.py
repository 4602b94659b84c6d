"""The callback interface: the only way metrics, checkpoints and progress leave the training loop.

``mmae.train.fit`` calls these hooks in order; subclasses override what they need. A worker plugs in
its checkpoint uploader (``workers.storage``), its reporter (SQL + MLflow, fenced to the job's current
attempt), a step log and a stop check (``workers.attempt``); ``mmae train`` plugs in a progress bar, a
metrics file and a Ctrl-C stop (``mmae.cli``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunInfo:
    """Facts about a run known once the model is built (sent to ``on_train_start``)."""

    total_steps: int
    start_step: int  # > 0 when resuming from a checkpoint
    feature_dim: int  # dimension of the features the information monitor measures
    num_parameters: int
    device: str
    precision: str
    tags: dict[str, str] = field(default_factory=dict)  # e.g. {"mu_convention": "paper", "world_size": "1"}
    batch_size: int | None = None  # rows of the (global) batch the information monitor measures


@dataclass(frozen=True)
class TrainResult:
    """What ``fit`` returns: where it stopped and the headline numbers."""

    final_step: int
    stopped_early: bool  # True when a callback asked to stop (cooperative cancel)
    summary: dict[str, float]  # last value of every metric, including eval/* when evaluation ran
    last_checkpoint: Path | None


class Callback:
    """Base class with no-op hooks. Every hook runs on the training process's main thread."""

    def on_train_start(self, info: RunInfo) -> None:
        """Called once, after the model is built and any checkpoint restored."""

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Called with every batch of metric values (``train/*``, ``info/*``, ``probe/*``, ``eval/*``)."""

    def before_checkpoint_publish(self, step: int) -> None:
        """Called once the checkpoint of ``step`` is complete under a temporary name, before it replaces
        anything under a final name (``step_*.pt``, ``last.pt``). Raise to abandon it: the temporary
        file is removed and the exception ends ``fit`` (a worker whose attempt is no longer current)."""

    def on_checkpoint(self, step: int, path: Path) -> None:
        """Called after a checkpoint for ``step`` has been written completely to ``path``."""

    def should_stop(self) -> bool:
        """Polled once per step; returning True makes ``fit`` checkpoint and return early."""
        return False

    def on_train_end(self, result: TrainResult) -> None:
        """Called once when ``fit`` returns normally (finished or stopped early)."""

    def on_status(self, message: str, details: dict[str, Any] | None = None) -> None:
        """Human-readable phase changes (``"evaluating"``, ``"resumed from step 100"``)."""
