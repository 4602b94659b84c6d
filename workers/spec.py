"""The attempt spec: everything a worker needs to run one attempt, written by the service as JSON."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from mmae.config import TrainConfig

# Exit status of a worker whose attempt can never succeed (invalid config or data, diverged loss):
# the service fails the job instead of retrying it. Any other non-zero status is retried.
EXIT_PERMANENT = 3
# Exit status of a worker that found its attempt fenced (no longer the job's current one): nothing to retry.
EXIT_FENCED = 4


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
    world_size: int = 1
    heartbeat_interval_s: float = 5.0  # how often the worker's lifeline writes the attempt's heartbeat

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
