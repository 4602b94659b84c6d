"""The worker's side of MLflow: one job's run, addressed by its explicit id (never the fluent active run).

The service creates the run (params, tags); the worker sends metric points in ``log_batch`` chunks
of at most 1000, tags from ``RunInfo``, and at the end the final checkpoint, the config and a PNG of
the information curves.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from mmae.config import TrainConfig

MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limit
Series = dict[str, tuple[list[int], list[float]]]  # metric name -> (steps, values)


class RunTracker:
    """Writes to one MLflow run."""

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def log_points(self, pending: list[tuple[str, int, float, int]]) -> None:
        """Send ``(name, step, value, timestamp_ms)`` points, removing each chunk from ``pending`` once sent.

        A failure leaves the unsent points in ``pending``, so a later call never sends a point twice.
        """
        from mlflow.entities import Metric

        while pending:
            chunk = pending[:MAX_METRICS_PER_BATCH]
            metrics = [Metric(name, value, timestamp, step) for name, step, value, timestamp in chunk]
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
            del pending[: len(chunk)]

    def high_water(self, names: Iterable[str]) -> dict[str, int]:
        """Highest step MLflow holds for each of ``names`` that has any point."""
        marks: dict[str, int] = {}
        for name in names:
            history = self.client.get_metric_history(self.run_id, name)
            if history:
                marks[name] = max(metric.step for metric in history)
        return marks

    def set_tags(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(self.run_id, tags=[RunTag(key, str(value)) for key, value in tags.items()])

    def log_final_artifacts(self, config: TrainConfig, checkpoint: Path | None, series: Series) -> None:
        """Log ``config.yaml``, the final checkpoint and ``information_curves.png`` to the run."""
        with tempfile.TemporaryDirectory() as folder:
            config_path = Path(folder) / "config.yaml"
            config_path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
            self.client.log_artifact(self.run_id, str(config_path))
            if checkpoint is not None and checkpoint.is_file():
                self.client.log_artifact(self.run_id, str(checkpoint), artifact_path="checkpoints")
            if series:
                png = plot_information_curves(series, Path(folder) / "information_curves.png")
                self.client.log_artifact(self.run_id, str(png))


def plot_information_curves(series: Series, path: Path) -> Path:
    """One small panel per metric (step on x), saved as a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    names = sorted(series)
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        steps, values = series[name]
        axis.plot(steps, values, linewidth=1.2)
        axis.set_title(name, fontsize=9)
        axis.set_xlabel("step", fontsize=8)
        axis.tick_params(labelsize=7)
    for axis in list(axes.flat)[len(names) :]:
        axis.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
