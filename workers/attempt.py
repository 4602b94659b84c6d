"""One attempt's training in this process: the run's last checkpoint restored from its run storage, ``fit``
with the checkpoint uploader, the fenced reporter, a step log and a cooperative stop (SIGTERM, or in a
data-parallel attempt the driver's request through its coordinator), then the run's final artifacts.

The single-process entrypoint runs it directly; in a data-parallel attempt rank 0 runs it (the other
ranks run ``fit`` with no callbacks). Exit status: 0 finished or stopped, ``EXIT_PERMANENT`` when
retrying cannot help (invalid config or data, diverged loss). ``AttemptFenced`` propagates.
"""

from __future__ import annotations

import logging
import math
import signal
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from sqlalchemy import Engine, column, select, table

from mmae.callbacks import Callback, RunInfo
from workers.credentials import MLFLOW_URI_ENV, with_node_password
from workers.reporter import Reporter, read_series
from workers.spec import EXIT_PERMANENT, AttemptSpec
from workers.storage import CheckpointUploader, open_run_storage
from workers.tracking import RunTracker

log = logging.getLogger(__name__)

# The service's jobs table, as far as a worker reads it: the job's MLflow run, once the service opened it.
_jobs = table("jobs", column("id"), column("mlflow_run_id"))


class StopOnSignal(Callback):
    """Turns SIGTERM/SIGINT into a cooperative stop: ``fit`` checkpoints and returns at the next step.

    ``on_request`` runs once, at the first signal (a data-parallel driver passes the stop on to its ranks).
    """

    def __init__(self, on_request: Callable[[], None] | None = None) -> None:
        self.requested = False
        self.on_request = on_request
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.requested:
            return
        print(f"[mmae] {signal.Signals(signum).name}: checkpointing and stopping", flush=True)
        self.requested = True
        if self.on_request is not None:
            self.on_request()

    def should_stop(self) -> bool:
        return self.requested


class StepLog(Callback):
    """A progress line in the Ray job log every ``every`` steps."""

    def __init__(self, every: int = 50) -> None:
        self.every = every

    def on_train_start(self, info: RunInfo) -> None:
        print(
            f"[mmae] training steps {info.start_step}..{info.total_steps} on {info.device} "
            f"({info.precision}, {info.num_parameters} parameters, world size {info.tags.get('world_size')})",
            flush=True,
        )

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.every == 0 and "train/loss" in metrics:
            print(f"[mmae] step {step} loss {metrics['train/loss']:.5g}", flush=True)


def job_run(engine: Engine, spec: AttemptSpec) -> RunTracker | None:
    """The job's MLflow run, as the service recorded it (it opens the run once the attempt runs)."""
    if spec.mlflow_tracking_uri is None:
        return None
    with engine.connect() as connection:
        run_id = connection.execute(select(_jobs.c.mlflow_run_id).where(_jobs.c.id == spec.job_id)).scalar()
    if run_id is None:
        return None
    return RunTracker(with_node_password(spec.mlflow_tracking_uri, MLFLOW_URI_ENV), run_id)


def use_allocated_threads(spec: AttemptSpec) -> None:
    """Torch's intra-op threads = the CPUs Ray gave this process (Ray sets OMP_NUM_THREADS=1 for a
    one-CPU entrypoint, whatever the machine has)."""
    torch.set_num_threads(max(1, math.floor(spec.scaling.num_cpus)))


def scratch_root() -> Path:
    """Where this node keeps local copies of runs whose storage is remote."""
    return Path(tempfile.gettempdir()) / "mmae-runs"


def train_attempt(spec: AttemptSpec, engine: Engine, stop: Callback) -> int:
    """Restore the run's last checkpoint from its storage, run ``fit`` with the checkpoint uploader, the
    reporter, ``StepLog`` and ``stop``, then log the final artifacts. ``StorageError`` propagates before
    anything is written to SQL when the storage cannot be reached."""
    from mmae.train import fit

    use_allocated_threads(spec)
    storage = open_run_storage(spec.storage_uri, spec.run_name, spec.config.checkpoint_keep)
    run_dir = storage.local_run_dir(scratch_root())
    storage.restore(run_dir)
    reporter = Reporter(
        engine, job_id=spec.job_id, attempt_id=spec.attempt_id, find_tracker=lambda: job_run(engine, spec)
    )
    uploader = CheckpointUploader(storage, reporter.check_current)  # before the reporter records a checkpoint
    try:
        result = fit(spec.config, run_dir, [uploader, reporter, StepLog(), stop], resume=True)
    except (ValueError, FloatingPointError):
        traceback.print_exc()
        reporter.flush()  # keep the series up to the failure
        return EXIT_PERMANENT
    if reporter.tracker is not None and not result.stopped_early:
        series = read_series(engine, spec.job_id, prefix="info/")
        reporter.check_current()
        try:
            reporter.tracker.log_final_artifacts(spec.config, result.last_checkpoint, series)
        except Exception:  # artifacts are secondary: the attempt's results are in SQL already
            log.exception("logging artifacts to MLflow failed")
    outcome = "stopped" if result.stopped_early else "finished"
    print(f"[mmae] {outcome} at step {result.final_step}", flush=True)
    return 0
