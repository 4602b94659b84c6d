"""The attempt spec: everything a worker needs to run one attempt, sent by the service as JSON with the Ray job."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmae.config import TrainConfig

# Exit status of a worker whose attempt can never succeed (invalid config or data, diverged loss):
# the service fails the job instead of retrying it. Any other non-zero status is retried.
EXIT_PERMANENT = 3
# The environment variable that carries an attempt's spec (JSON) to its Ray job.
SPEC_ENV = "MMAE_ATTEMPT_SPEC"
# Exit status of a worker that found its attempt fenced (no longer the job's current one): nothing to retry.
EXIT_FENCED = 4


class Scaling(BaseModel):
    """How many ranks an attempt trains on and what each holds. One worker trains in the entrypoint
    process itself; more run as a Ray Train ``TorchTrainer`` (``workers.data_parallel``) whose ranks
    each hold ``num_cpus`` / ``num_gpus``, placed by ``placement``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: int = Field(default=1, ge=1)
    num_cpus: float = Field(default=1.0, gt=0)  # per worker
    num_gpus: float = Field(default=0.0, ge=0)  # per worker
    placement: Literal["pack", "spread"] = "pack"


class AttemptSpec(BaseModel):
    """One attempt of one job, as the service hands it to Ray with the job (``SPEC_ENV``), so a worker on
    any node needs no file from the service. Attempts of a job share its run storage
    (``storage_uri``/``run_name``, see ``workers.storage``), so a retry resumes its last checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt_id: int
    job_id: int
    config: TrainConfig
    storage_uri: str  # MMAE_STORAGE_URI: a mounted path or s3://bucket/prefix
    run_name: str  # the job's run under storage_uri, job-<id>-<random>
    database_url: str
    mlflow_tracking_uri: str | None = None
    heartbeat_interval_s: float = 5.0  # how often the worker's lifeline writes the attempt's heartbeat
    scaling: Scaling = Scaling()

    @classmethod
    def read(cls, path: Path) -> AttemptSpec:
        """A spec saved to a file (to run an attempt by hand)."""
        return cls.model_validate_json(Path(path).read_text())

    @classmethod
    def from_environment(cls) -> AttemptSpec:
        """The spec the service passed with the Ray job."""
        if SPEC_ENV not in os.environ:
            raise ValueError(f"no attempt spec: {SPEC_ENV} is not set and no --spec file was given")
        return cls.model_validate_json(os.environ[SPEC_ENV])
