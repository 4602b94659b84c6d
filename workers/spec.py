"""The attempt spec: everything a worker needs to run one attempt, written by the service as JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mmae.config import TrainConfig

# Exit status of a worker whose attempt can never succeed (invalid config or data, diverged loss):
# the service fails the job instead of retrying it. Any other non-zero status is retried.
EXIT_PERMANENT = 3
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
    """One attempt of one job. Attempts of a job share ``run_dir``, so a retry resumes its checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    attempt_id: int
    job_id: int
    config: TrainConfig
    run_dir: Path
    database_url: str
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = None
    heartbeat_interval_s: float = 5.0  # how often the worker's lifeline writes the attempt's heartbeat
    scaling: Scaling = Scaling()

    def write(self, path: Path) -> Path:
        """Write the spec atomically (temporary name, then rename) and return ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.model_dump_json(indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, path: Path) -> AttemptSpec:
        return cls.model_validate_json(Path(path).read_text())
