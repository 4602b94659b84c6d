"""The service's side of MLflow: one run per job, one parent run per sweep, terminal statuses.

Runs are addressed by explicit id through ``MlflowClient`` (never the fluent global run). A job's
run carries the flattened config as params (``log_batch`` takes at most 100 per call) and the tags
that identify an experiment: config_hash, package version, mu_convention, world_size (the job's
workers, one rank each), seed. A sweep cell's run is tagged ``mlflow.parentRunId`` with its sweep's
run. A job's run is also tagged with the name of the job's run directory (unique per job), so opening
it is idempotent: a run created by an API process that died before recording its id is found again,
not doubled; a sweep's parent run likewise by its sweep's id and creation time. With a local ``sqlite://``
store, artifacts go under ``data_dir/mlartifacts`` (MLflow's default would be ``./mlruns`` of whatever
directory the process runs in); a tracking server serves its own artifacts.

Only ``service.tracking.mlflow_sync``'s thread calls these, never the scheduler: a tracking server that does not
answer costs that thread ``MLFLOW_HTTP_TIMEOUT_S`` per call, with no retries of MLflow's own (its
defaults, 120 s and 7 retries with backoff, made one call take 247 s); the thread retries a failed pass
later. ``MLFLOW_HTTP_REQUEST_TIMEOUT`` and ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` set by the operator win.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Engine

from mmae import __version__
from mmae.config import TrainConfig, flatten_config
from service.settings import Settings
from service.store.models import Job, Sweep
from service.store.states import JobStatus

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
MLFLOW_HTTP_TIMEOUT_S = 5  # per HTTP request to a tracking server
SEARCH_PAGE = 500  # runs per search_runs page
_RUN_STATUS = {JobStatus.SUCCEEDED: "FINISHED", JobStatus.FAILED: "FAILED", JobStatus.CANCELLED: "KILLED"}


class Tracker:
    """Creates and closes the MLflow runs of jobs and sweeps in ``settings.mlflow_experiment``."""

    def __init__(self, settings: Settings) -> None:
        self.tracking_uri = settings.resolved_mlflow_uri
        self.experiment_name = settings.mlflow_experiment
        local = self.tracking_uri.startswith("sqlite")
        self.artifact_location = (settings.data_dir / "mlartifacts").resolve().as_uri() if local else None
        self._client: Any = None
        self._experiment_id: str | None = None
        self._lock = threading.Lock()
        self.changed = threading.Event()  # set by ``wake``; the MLflow sync thread waits on it

    def wake(self) -> None:
        """Ask this process's MLflow sync (when it runs here) for a pass now: job states changed."""
        self.changed.set()

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use: opening a new sqlite store runs migrations)."""
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

                os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(MLFLOW_HTTP_TIMEOUT_S))
                os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
                self._client = MlflowClient(self.tracking_uri)
            return self._client

    def experiment_id(self) -> str:
        """Id of the experiment, created (with the artifact location) when it does not exist yet."""
        if self._experiment_id is None:
            from mlflow.exceptions import MlflowException

            experiment = self.client.get_experiment_by_name(self.experiment_name)
            if experiment is not None:
                self._experiment_id = experiment.experiment_id
            else:
                try:
                    self._experiment_id = self.client.create_experiment(
                        self.experiment_name, artifact_location=self.artifact_location
                    )
                except MlflowException:  # created concurrently by another process
                    experiment = self.client.get_experiment_by_name(self.experiment_name)
                    self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def reachable(self) -> None:
        """Raise unless the tracking server answers (one cheap call: the experiment)."""
        self.client.get_experiment(self.experiment_id())

    def job_run(self, job: Job, parent_run_id: str | None = None) -> str:
        """Id of ``job``'s run: the run tagged with the job's run directory when one exists (created by
        a pass that died before recording it), else a new run."""
        found = self._find(f"tags.`mmae.run_dir` = '{job.run_dir_name}'")
        return found or self.create_job_run(job, parent_run_id)

    def sweep_run(self, sweep: Sweep) -> str:
        """Id of ``sweep``'s parent run: the one tagged with its key when one exists, else a new run."""
        return self._find(f"tags.`mmae.sweep_key` = '{_sweep_key(sweep)}'") or self.create_sweep_run(sweep)

    def _find(self, filter_string: str) -> str | None:
        found = self.client.search_runs([self.experiment_id()], filter_string=filter_string, max_results=1)
        return found[0].info.run_id if found else None

    def running_runs(self) -> Iterator[str]:
        """Ids of the experiment's runs that MLflow has as RUNNING."""
        yield from self._search("attributes.status = 'RUNNING'")

    def ended_among(self, run_ids: Sequence[str]) -> Iterator[str]:
        """Those of ``run_ids`` that MLflow has as ended (FINISHED, FAILED, KILLED)."""
        for start in range(0, len(run_ids), SEARCH_PAGE):
            quoted = ", ".join(f"'{run_id}'" for run_id in run_ids[start : start + SEARCH_PAGE])
            yield from self._search(f"attributes.run_id IN ({quoted}) AND attributes.status != 'RUNNING'")

    def _search(self, filter_string: str) -> Iterator[str]:
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id()], filter_string=filter_string, max_results=SEARCH_PAGE, page_token=token
            )
            yield from (run.info.run_id for run in page)
            token = page.token
            if not token:
                return

    def backfill_metrics(self, engine: Engine, job_id: int, run_id: str) -> int:
        """Send the job's metric points that SQL has and the run lacks (the job ran while MLflow was
        down, or its worker ended before the run existed); returns how many were sent. Only for an
        ended job: no worker sends to the run meanwhile."""
        from workers.reporter import read_series, sql_high_water
        from workers.tracking import RunTracker

        marks = sql_high_water(engine, job_id)
        if not marks:
            return 0
        run = RunTracker(self.tracking_uri, run_id)
        sent = run.high_water(marks)
        stamp = int(time.time() * 1000)
        pending = [
            (name, step, value, stamp)
            for name, (steps, values) in read_series(engine, job_id, after=sent).items()
            for step, value in zip(steps, values, strict=True)
        ]
        count = len(pending)
        run.log_points(pending)
        return count

    def create_job_run(self, job: Job, parent_run_id: str | None = None) -> str:
        """A new run for ``job`` with its config as params and identifying tags; returns the run id."""
        from mlflow.entities import Param

        config = TrainConfig.model_validate(job.config)
        tags = {
            "config_hash": job.config_hash,
            "mmae_version": __version__,
            "mu_convention": config.loss.mu_convention,
            "world_size": str(job.workers),
            "seed": str(config.seed),
            "method": config.method,
            "mmae.job_id": str(job.id),
            "mmae.run_dir": str(job.run_dir_name),
            "mmae.resources": (
                f"workers={job.workers} cpus_per_worker={job.num_cpus:g} gpus_per_worker={job.num_gpus:g} "
                f"placement={job.placement}"
            ),
        }
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id(), tags=tags, run_name=job.name)
        params = [Param(key, str(value)) for key, value in flatten_config(config).items()]
        for start in range(0, len(params), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run.info.run_id, params=params[start : start + MAX_PARAMS_PER_BATCH])
        return run.info.run_id

    def create_sweep_run(self, sweep: Sweep) -> str:
        """The parent run of a sweep; its cells' runs point at it with ``mlflow.parentRunId``."""
        tags = {
            "mmae.sweep_id": str(sweep.id),
            "mmae.sweep_key": _sweep_key(sweep),
            "mmae.strategy": sweep.strategy,
            "mmae_version": __version__,
        }
        run = self.client.create_run(self.experiment_id(), tags=tags, run_name=sweep.name)
        self.client.log_param(run.info.run_id, "swept", ",".join(sorted(sweep.parameters)))
        return run.info.run_id

    def log_report(self, run_id: str, html: str, artifact_file: str) -> None:
        """Store a sweep's reproduction report page on its parent run (replacing an earlier one)."""
        self.client.log_text(run_id, html, artifact_file)

    def mark_running(self, run_id: str) -> None:
        """Re-open a run whose job was retried after it had ended."""
        self.client.update_run(run_id, status="RUNNING")

    def finish_run(self, run_id: str, status: JobStatus) -> None:
        """Close a run with the MLflow status of a terminal job status (FINISHED, FAILED or KILLED)."""
        self.client.set_terminated(run_id, status=_RUN_STATUS[status])


def _sweep_key(sweep: Sweep) -> str:
    """Names one sweep beyond its database (a reset database reuses ids): its id and creation time."""
    return f"{sweep.id}@{sweep.created_at.replace(tzinfo=None).isoformat(timespec='seconds')}"
