"""A callback that appends every metric batch, status and checkpoint to ``metrics.jsonl``.

One JSON object per line, flushed as written, so the file can be tailed while training runs:
``{"step": 10, "time": 1716.2, "metrics": {"train/loss": 0.41, ...}}``,
``{"step": 100, "time": ..., "checkpoint": "checkpoints/step_00000100.pt"}``,
``{"time": ..., "status": "evaluating"}``.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmae.callbacks import Callback, RunInfo, TrainResult
from mmae.finite import finite_or_none


class MetricsFile(Callback):
    """Writes JSON lines to ``path`` (appending, so a resumed run extends its history)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")

    def _write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps({"time": round(time.time(), 3), **record}) + "\n")
        self._handle.flush()

    def on_train_start(self, info: RunInfo) -> None:
        self._write({"step": info.start_step, "status": "started", "run": asdict(info)})

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        self._write({"step": step, "metrics": {name: finite_or_none(value) for name, value in metrics.items()}})

    def on_checkpoint(self, step: int, path: Path) -> None:
        self._write({"step": step, "checkpoint": str(path)})

    def on_status(self, message: str, details: dict[str, Any] | None = None) -> None:
        self._write({"status": message, **({"details": details} if details else {})})

    def on_train_end(self, result: TrainResult) -> None:
        self._write({"step": result.final_step, "status": "stopped" if result.stopped_early else "finished"})
        self._handle.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """All records of a ``metrics.jsonl`` file, in order."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
