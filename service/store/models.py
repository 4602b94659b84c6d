"""ORM models: sweeps, jobs, attempts, API tokens and login sessions, and the worker-written metric tables.

Configs are stored as JSON exactly as validated by ``mmae.config.TrainConfig``; the config hash
makes a sweep cell's identity, so resubmitting a sweep is idempotent.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from mmae.finite import finite_numbers
from service.store.clock import utcnow
from service.store.states import AttemptStatus, JobStatus
from workers.spec import Scaling
from workers.tables import attempt_progress, metadata, metric_points

HEADLINE_METRIC = "eval/linear_top1"  # the offline linear probe's top-1 accuracy: a job's headline result


class Base(DeclarativeBase):
    metadata = metadata
    type_annotation_map: ClassVar = {dict[str, Any]: JSON, list[Any]: JSON}


class Sweep(Base):
    __tablename__ = "sweeps"
    # An Idempotency-Key belongs to the token that sent it: two tokens may use the same key.
    __table_args__ = (UniqueConstraint("idempotency_token_id", "idempotency_key", name="uq_sweeps_idempotency"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    base_config: Mapped[dict[str, Any]] = mapped_column(JSON)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)  # dotted field -> {"values": [...]} or a distribution
    strategy: Mapped[str] = mapped_column(String(16))  # grid | random
    num_samples: Mapped[int | None] = mapped_column(Integer, nullable=True)  # random only
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)  # see Job.owner
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the key's token
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 of the keyed request
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    jobs: Mapped[list[Job]] = relationship(back_populates="sweep", order_by="Job.id")


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("sweep_id", "config_hash", name="uq_jobs_sweep_cell"),
        # An Idempotency-Key belongs to the token that sent it: two tokens may use the same key.
        UniqueConstraint("idempotency_token_id", "idempotency_key", name="uq_jobs_idempotency"),
        # (key, id): the job list sorts by a key, then id, and filters by status or method; these serve
        # both from an index instead of sorting the whole table.
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_method_id", "method", "id"),
        Index("ix_jobs_priority_id", "priority", "id"),
        Index("ix_jobs_name_id", "name", "id"),
        # Admission reads the queue a priority level at a time, FIFO within it, a page at a time, and the
        # distinct shapes waiting in it: both from an index, however long the queue (service.scheduling.scheduler).
        Index("ix_jobs_queue", "status", "priority", "queued_at", "id"),
        Index("ix_jobs_status_shape", "status", "num_cpus", "num_gpus", "workers"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED)
    method: Mapped[str] = mapped_column(String(32))
    config: Mapped[dict[str, Any]] = mapped_column(JSON)
    config_hash: Mapped[str] = mapped_column(String(32), index=True)
    sweep_id: Mapped[int | None] = mapped_column(ForeignKey("sweeps.id"), nullable=True, index=True)
    cell_params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # sweep cell's overrides
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # run_params.key_params, at creation
    priority: Mapped[int] = mapped_column(Integer, default=0)
    max_retries: Mapped[int] = mapped_column(Integer, default=2)
    retries_used: Mapped[int] = mapped_column(Integer, default=0)
    # A job trains on ``workers`` data-parallel ranks (Ray Train), each holding num_cpus and num_gpus,
    # placed by ``placement`` (pack | spread); one worker trains in the Ray Jobs entrypoint itself.
    workers: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    num_cpus: Mapped[float] = mapped_column(Float, default=1.0)  # per worker
    num_gpus: Mapped[float] = mapped_column(Float, default=0.0)  # per worker
    placement: Mapped[str] = mapped_column(String(16), default="pack", server_default="pack")
    tags: Mapped[list[Any]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # final metrics
    # The summary's headline metric (HEADLINE_METRIC) as a column: the job list sorts by it without
    # parsing every row's JSON. Set only through ``record_summary``.
    linear_top1: Mapped[float | None] = mapped_column(Float, nullable=True)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # Name of the run directory under settings.runs_dir, chosen at the first start (job-<id>-<random>).
    run_dir_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The token owner that submitted it (ApiToken.owner); None for rows made outside the API or before
    # owners existed (revision 0004): only admin tokens change those.
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(200), nullable=True)
    idempotency_token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the key's token
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 of the keyed request
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    queued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    # Compare-and-set on status: every UPDATE of a job says "WHERE status = <the status we read>", so
    # the scheduler and an API request that change the same job concurrently cannot overwrite each
    # other (the loser gets StaleDataError and re-reads).
    __mapper_args__ = {"version_id_col": status, "version_id_generator": False}  # noqa: RUF012

    sweep: Mapped[Sweep | None] = relationship(back_populates="jobs")
    attempts: Mapped[list[Attempt]] = relationship(back_populates="job", order_by="Attempt.number")

    @hybrid_property
    def cpus_held(self) -> float:
        """CPUs the job holds while active, all workers together (in SQL too: ``sum(Job.cpus_held)``)."""
        return self.workers * self.num_cpus

    @hybrid_property
    def gpus_held(self) -> float:
        """GPUs the job holds while active, all workers together (in SQL too: ``sum(Job.gpus_held)``)."""
        return self.workers * self.num_gpus

    @property
    def scaling(self) -> Scaling:
        """What the job's attempts ask Ray for: the workers, each one's CPUs and GPUs, their placement."""
        return Scaling(workers=self.workers, num_cpus=self.num_cpus, num_gpus=self.num_gpus, placement=self.placement)

    def record_summary(self, summary: dict[str, Any] | None) -> None:
        """Store the final metrics (finite numbers, or None to clear them) and their headline column."""
        self.summary = summary
        self.linear_top1 = finite_numbers(summary).get(HEADLINE_METRIC)


class Attempt(Base):
    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("job_id", "number", name="uq_attempts_job_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... within the job
    status: Mapped[str] = mapped_column(String(16), default=AttemptStatus.PENDING)
    ray_submission_id: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)

    job: Mapped[Job] = relationship(back_populates="attempts")


class ApiToken(Base):
    """A bearer token: its ``role`` (admin | user | read, see ``service.auth.Role``) says what it may do,
    its ``owner`` names who the jobs it submits belong to (several tokens may share an owner: rotation)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    role: Mapped[str] = mapped_column(String(16))
    owner: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # None: never
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # to the minute
    revoked: Mapped[bool] = mapped_column(default=False)


class LoginSession(Base):
    """What the web page's cookie names: a random secret stored hashed, tied to the token that logged in.
    Logout deletes the row, so a replayed cookie no longer works; the token itself stays valid."""

    __tablename__ = "login_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the cookie's secret
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MetricPoint(Base):
    """Read-side mapping of ``workers.tables.metric_points``."""

    __table__ = metric_points


class AttemptProgress(Base):
    """Read-side mapping of ``workers.tables.attempt_progress``."""

    __table__ = attempt_progress
