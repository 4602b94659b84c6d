"""The service's side of MLflow: one run per job, one parent run per sweep, terminal statuses.

Runs are addressed by explicit id through ``MlflowClient`` (never the fluent global run). A job's
run carries the flattened config as params (``log_batch`` takes at most 100 per call) and the tags
that identify an experiment: config_hash, package version, mu_convention, world_size (the job's
workers, one rank each), seed. A sweep cell's run is tagged ``mlflow.parentRunId`` with its sweep's
run. A job's run is also tagged with the name of the job's run directory (unique per job), so opening
it is idempotent: a run created by an API process that died before recording its id is found again,
not doubled. With a local ``sqlite://`` store, artifacts go under ``data_dir/mlartifacts`` (MLflow's
default would be ``./mlruns`` of whatever directory the process runs in); a tracking server serves its
own artifacts.
"""

from __future__ import annotations

import threading
from typing import Any

from mmae import __version__
from mmae.config import TrainConfig, flatten_config
from service.models import Job, Sweep
from service.settings import Settings
from service.states import JobStatus

MAX_PARAMS_PER_BATCH = 100  # MLflow's log_batch limit
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

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` (created on first use: opening a new sqlite store runs migrations)."""
        with self._lock:
            if self._client is None:
                from mlflow import MlflowClient

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

    def job_run(self, job: Job, parent_run_id: str | None = None) -> str:
        """Id of ``job``'s run: the run tagged with the job's run directory when one exists (created by
        an API process that died before recording it), else a new run."""
        found = self.client.search_runs(
            [self.experiment_id()], filter_string=f"tags.`mmae.run_dir` = '{job.run_dir_name}'", max_results=1
        )
        return found[0].info.run_id if found else self.create_job_run(job, parent_run_id)

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
        tags = {"mmae.sweep_id": str(sweep.id), "mmae.strategy": sweep.strategy, "mmae_version": __version__}
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
