"""Service settings, read once from the environment at startup and injected everywhere."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

from pydantic import AliasChoices, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.data_roots import DataRoots, parse_data_roots
from service.schemas import SWEEP_CELL_CEILING
from workers.storage import parse_storage_uri

DEFAULT_MAX_BODY_BYTES = 4 * 2**20  # the largest valid sweep (16 x 1000 values) is ~0.3 MB; 4 MiB bounds the parse
DEFAULT_MAX_SWEEP_CELLS = 1000  # ~0.4 s of API CPU to expand and insert (10,000 cells took 3.8 s)
DEFAULT_MAX_STREAMS_PER_TOKEN = 8  # a person with a few run pages open; 200 streams slowed /api/jobs 20x


class Settings(BaseSettings):
    """Every knob of the control plane. Defaults give a zero-service laptop setup."""

    model_config = SettingsConfigDict(env_prefix="MMAE_", extra="ignore")

    data_dir: Path = Path("./mmae-data")  # runs, checkpoints, SQLite files, MLflow artifacts
    database_url: str | None = None  # default: SQLite (WAL) under data_dir; PostgreSQL in production
    ray_address: str | None = None  # None: start a local Ray instance; "ray://" or "http://head:8265" for a cluster
    mlflow_tracking_uri: str | None = Field(
        default=None, validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "MMAE_MLFLOW_TRACKING_URI")
    )  # default: sqlite store under data_dir
    mlflow_experiment: str = "mmae"
    mlflow_ui_url: str | None = None  # base URL of the MLflow UI, for links from the web page
    # Where runs keep their checkpoints: a path every worker node mounts, or s3://bucket/prefix (credentials
    # and endpoint from the workers' AWS_* variables). Default: data_dir/runs.
    storage_uri: str | None = None
    worker_python: str | None = None  # interpreter for Ray job entrypoints; default: this one
    run_scheduler: bool = True  # run the scheduler loop while holding the database's lease (False: API only)
    lease_retry_s: float = Field(default=2.0, gt=0)  # how often the scheduler lease is asked for, or checked
    scheduler_interval_s: float = Field(default=1.0, gt=0)  # how often queued jobs are admitted
    reconcile_interval_s: float = Field(default=3.0, gt=0)  # how often Ray job states are read back
    starting_poll_s: float = Field(default=0.02, gt=0)  # how often a just-submitted attempt is polled until it runs
    ray_timeout_s: float = Field(default=10.0, gt=0)  # timeout of each Ray Jobs API call
    # A submission Ray failed to take (no answer, 5xx, 429) is tried again with backoff for this long,
    # then its attempt fails (and the job is retried while it has retries left)
    submit_retry_s: float = Field(default=300.0, gt=0, le=86400)
    read_threads: int = Field(default=4, ge=1)  # worker threads serving read-only requests (see db.Reads)
    pending_timeout_s: float = Field(default=900.0, gt=0)  # a Ray job PENDING longer than this is failed
    stop_grace_s: float = Field(default=10.0, gt=0)  # cooperative stop window before a forced stop
    heartbeat_interval_s: float = Field(default=5.0, gt=0, le=300)  # how often a running attempt's worker beats
    # A running attempt whose last heartbeat is older than this is failed (and retried): a hung or
    # partitioned worker. At least three intervals, so one slow write never fails an attempt.
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    # Collapse alarm: the centred effective rank (info/erank_centered) below this share of min(B - 1, d).
    # Every shipped example stayed at 6.5% or more at every snapshot; destroyed runs sit at 1-3.5%.
    collapse_fraction: float = Field(default=0.04, gt=0, lt=1)
    # Folders whose datasets jobs may read (colon-separated absolute paths, as every worker mounts them);
    # none: only the bundled digits and synthetic data (see service/data_roots.py)
    data_roots: Annotated[DataRoots, NoDecode] = ()
    # Largest request body in bytes (413 above it): bounds what one request makes the API read and parse
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1024, le=2**30)
    # Most cells one sweep may expand to (422 above it); at most SWEEP_CELL_CEILING
    max_sweep_cells: int = Field(default=DEFAULT_MAX_SWEEP_CELLS, ge=1, le=SWEEP_CELL_CEILING)
    # Live event streams one token may hold open in one API process (429 above it)
    max_streams_per_token: int = Field(default=DEFAULT_MAX_STREAMS_PER_TOKEN, ge=1, le=10_000)

    @model_validator(mode="after")
    def _heartbeat_timeout_spans_beats(self) -> Settings:
        if self.heartbeat_timeout_s < 3 * self.heartbeat_interval_s:
            raise ValueError(
                f"MMAE_HEARTBEAT_TIMEOUT_S ({self.heartbeat_timeout_s:g}) must be at least three heartbeat "
                f"intervals (MMAE_HEARTBEAT_INTERVAL_S = {self.heartbeat_interval_s:g})"
            )
        return self

    @model_validator(mode="after")
    def _no_placeholder_secrets(self) -> Settings:
        """Refuse to start with a guessable secret (the values are never printed)."""
        from sqlalchemy import make_url

        from service.cluster.ray_head import auth_token

        token = auth_token() if self.ray_address else None
        if token is not None and not _strong(token, 32):
            raise ValueError(
                "RAY_AUTH_TOKEN: must be at least 32 random characters (openssl rand -hex 32), not a placeholder"
            )
        password = make_url(self.database_url).password if self.database_url else None
        if password is not None and not _strong(password, 16):
            raise ValueError(
                "MMAE_DATABASE_URL: the database password must be at least 16 random characters, not a placeholder"
            )
        return self

    @field_validator("data_roots", mode="before")
    @classmethod
    def _data_roots_are_absolute(cls, roots: Any) -> DataRoots:
        """From the variable's text (``/a:/b``) or a sequence of paths; ValueError naming a relative one."""
        return parse_data_roots(roots if isinstance(roots, str) else ":".join(str(root) for root in roots))

    @field_validator("storage_uri")
    @classmethod
    def _storage_uri_is_known(cls, uri: str | None) -> str | None:
        if uri is not None:
            parse_storage_uri(uri)  # ValueError naming MMAE_STORAGE_URI and the reason
        return uri

    @cached_property
    def resolved_storage_uri(self) -> str:
        return self.storage_uri or str(self.runs_dir)

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'mmae.db').resolve()}"

    @cached_property
    def resolved_mlflow_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def runs_dir(self) -> Path:
        """Shared location of each job's run directory (checkpoints, metrics, specs)."""
        return (self.data_dir / "runs").resolve()


PLACEHOLDER_WORDS = ("change-me", "change_me", "changeme")


def _strong(secret: str, length: int) -> bool:
    """At least ``length`` characters and none of the words example files use for a placeholder."""
    return len(secret) >= length and not any(word in secret.lower() for word in PLACEHOLDER_WORDS)
