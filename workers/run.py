"""Ray job entrypoint for one attempt: ``python -m workers.run --spec PATH``.

Loads the spec, runs ``mmae.train.fit`` (which resumes from ``run_dir/checkpoints/last.pt``) with
the reporter and a SIGTERM stop check, then logs the final artifacts to MLflow. SIGTERM (Ray's stop)
makes fit checkpoint and return at the next step; Ray kills the process if that takes longer than
its stop wait. The service starts this module with ``exec``, so Ray's supervisor is its parent: the
lifeline (``workers.lifeline``) ends it when the supervisor is gone or the attempt is fenced, and
every write is fenced (``workers.fence``), so an attempt that is no longer current changes nothing.
Exit status: 0 finished or stopped, ``EXIT_PERMANENT`` when retrying cannot help (invalid config or
data, diverged loss), ``EXIT_FENCED`` for a stale attempt, 1 for any other failure (the service
retries those).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine

from mmae.callbacks import Callback, RunInfo
from workers.fence import AttemptFenced
from workers.lifeline import Lifeline
from workers.reporter import Reporter, connect, read_series
from workers.spec import EXIT_FENCED, EXIT_PERMANENT, AttemptSpec
from workers.tracking import RunTracker

log = logging.getLogger("workers.run")


class StopOnSignal(Callback):
    """Turns SIGTERM/SIGINT into a cooperative stop: ``fit`` checkpoints and returns at the next step."""

    def __init__(self) -> None:
        self.requested = False
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            print(f"[mmae] {signal.Signals(signum).name}: checkpointing and stopping", flush=True)
        self.requested = True

    def should_stop(self) -> bool:
        return self.requested


class StepLog(Callback):
    """A progress line in the Ray job log every ``every`` steps."""

    def __init__(self, every: int = 50) -> None:
        self.every = every

    def on_train_start(self, info: RunInfo) -> None:
        print(f"[mmae] training steps {info.start_step}..{info.total_steps} on {info.device} "
              f"({info.precision}, {info.num_parameters} parameters)", flush=True)

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step % self.every == 0 and "train/loss" in metrics:
            print(f"[mmae] step {step} loss {metrics['train/loss']:.5g}", flush=True)


def find_run(spec_path: Path) -> RunTracker | None:
    """The job's MLflow run as the attempt's spec names it now (the service adds it after submitting)."""
    spec = AttemptSpec.read(spec_path)
    if spec.mlflow_run_id is None or spec.mlflow_tracking_uri is None:
        return None
    return RunTracker(spec.mlflow_tracking_uri, spec.mlflow_run_id)


def run_attempt(spec: AttemptSpec, spec_path: Path) -> int:
    """Run one attempt to the end; returns the process exit status."""
    engine = connect(spec.database_url)
    lifeline = Lifeline(
        engine, job_id=spec.job_id, attempt_id=spec.attempt_id, interval_s=spec.heartbeat_interval_s
    )
    try:
        lifeline.start()
        return _train(spec, spec_path, engine)
    except AttemptFenced as fenced:
        print(f"[mmae] stopping: {fenced}", flush=True)
        return EXIT_FENCED
    finally:
        lifeline.stop()


def _train(spec: AttemptSpec, spec_path: Path, engine: Engine) -> int:
    """``fit`` with the reporter, then the final artifacts; ``AttemptFenced`` ends it wherever it comes."""
    from mmae.train import fit

    stop = StopOnSignal()
    reporter = Reporter(
        engine, job_id=spec.job_id, attempt_id=spec.attempt_id, find_tracker=lambda: find_run(spec_path)
    )
    spec.run_dir.mkdir(parents=True, exist_ok=True)
    try:
        result = fit(spec.config, spec.run_dir, [reporter, StepLog(), stop], resume=True)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, required=True, help="AttemptSpec JSON written by the service")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run_attempt(AttemptSpec.read(args.spec), args.spec)


if __name__ == "__main__":
    sys.exit(main())
