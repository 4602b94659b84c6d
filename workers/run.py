"""Ray job entrypoint for one attempt: ``python -m workers.run --attempt ID`` (the spec in ``MMAE_ATTEMPT_SPEC``),
or ``--spec FILE`` by hand.

Loads the spec and trains: in this process (``workers.attempt``) for one worker, or on a Ray Train
``TorchTrainer`` (``workers.data_parallel``) for several. ``fit`` resumes from the run's last
checkpoint. SIGTERM (Ray's stop) makes fit checkpoint and return at the next step; Ray kills the
process if that takes longer than its stop wait. The service starts this module with ``exec``, so
Ray's supervisor is its parent: the lifeline (``workers.lifeline``) ends it when the supervisor is
gone or the attempt is fenced, and every write is fenced (``workers.fence``), so an attempt that is
no longer current changes nothing. Exit status: 0 finished or stopped, ``EXIT_PERMANENT`` when
retrying cannot help (invalid config or data, diverged loss), ``EXIT_FENCED`` for a stale attempt,
1 for any other failure (the service retries those).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from workers.fence import AttemptFenced
from workers.lifeline import Lifeline
from workers.reporter import connect
from workers.spec import EXIT_FENCED, EXIT_PERMANENT, AttemptSpec
from workers.storage import StorageError

# MLflow is a secondary sink: a tracking server that does not answer costs the reporter's MLflow sender
# seconds, not MLflow's default of 120 s a request retried 7 times with backoff; its points are kept and
# sent again later (workers.reporter). An operator's own values in the environment win.
MLFLOW_CLIENT_ENV = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "10", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}


def run_attempt(spec: AttemptSpec) -> int:
    """Run one attempt to the end (in this process, or on Ray Train ranks); returns the exit status."""
    engine = connect(spec.database_url)
    lifeline = Lifeline(engine, job_id=spec.job_id, attempt_id=spec.attempt_id, interval_s=spec.heartbeat_interval_s)
    try:
        lifeline.start()  # first, so the service hears from the attempt before torch is even imported
        if spec.scaling.workers > 1:
            from workers.data_parallel import run_data_parallel

            return run_data_parallel(spec)
        from workers.attempt import StopOnSignal, train_attempt

        return train_attempt(spec, engine, StopOnSignal())
    except AttemptFenced as fenced:
        print(f"[mmae] stopping: {fenced}", flush=True)
        return EXIT_FENCED
    except StorageError as error:  # retried: storage may be back by the next attempt
        print(f"[mmae] {error}", flush=True)
        return 1
    finally:
        lifeline.stop()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m workers.run", description=__doc__.splitlines()[0])
    parser.add_argument("--attempt", type=int, help="the attempt's id (a label: the spec comes with the Ray job)")
    parser.add_argument("--spec", type=Path, help="run the AttemptSpec in this JSON file instead")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name, value in MLFLOW_CLIENT_ENV.items():
        os.environ.setdefault(name, value)
    try:
        spec = AttemptSpec.read(args.spec) if args.spec else AttemptSpec.from_environment()
    except (OSError, ValueError) as error:
        print(f"[mmae] cannot read the attempt spec: {str(error).splitlines()[0]}", flush=True)
        return EXIT_PERMANENT
    return run_attempt(spec)


if __name__ == "__main__":
    sys.exit(main())
