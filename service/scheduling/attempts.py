"""Launching and ending attempts: the only code that moves a job along the state machine.

An attempt row (with its Ray submission id) is committed before anything is submitted, so a crash
at any point leaves a row the reconciler can match against Ray: nothing is lost, nothing doubled.
Every status change goes through ``service.store.states.check_transition``.
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from sqlalchemy.orm import Session

from mmae.config import TrainConfig
from service.cluster.ray_client import RayBusy, RayClient
from service.settings import Settings
from service.store.models import Attempt, Job
from service.store.states import AttemptStatus, JobStatus, check_transition
from workers.credentials import without_password
from workers.spec import AttemptSpec

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


def run_name(job: Job) -> str:
    """The name of the run storage every attempt of ``job`` shares (checkpoints), under the storage URI.

    ``job-<id>-<random>`` is chosen on first use and stored on the job (the caller commits it): a job
    whose id a reset database reuses never resumes an older job's checkpoint.
    """
    if job.run_dir_name is None:
        job.run_dir_name = f"job-{job.id}-{secrets.token_hex(4)}"
    return job.run_dir_name


def move(job: Job, status: JobStatus) -> None:
    """Set ``job.status`` along an edge of the state machine (raises ``InvalidTransition`` otherwise)."""
    check_transition(JobStatus(job.status), status)
    job.status = status


def start_attempt(session: Session, job: Job, ray: RayClient, settings: Settings) -> Attempt:
    """queued -> starting: commit a new attempt, then submit it to Ray.

    The job's MLflow run is opened once the attempt runs, by ``service.tracking.mlflow_sync``'s thread, off the
    path to running; the worker finds the run's id on the job's row.
    """
    check_transition(JobStatus(job.status), JobStatus.STARTING)
    attempt = Attempt(job=job, number=len(job.attempts) + 1, status=AttemptStatus.PENDING)
    session.add(attempt)
    session.flush()
    # Unique beyond this database: Ray clusters outlive databases (a reset, a test, a second deployment).
    attempt.ray_submission_id = f"mmae-attempt-{attempt.id}-{secrets.token_hex(4)}"
    run_name(job)  # named before the commit, so every attempt of the job shares it
    move(job, JobStatus.STARTING)
    session.commit()
    submit(session, job, attempt, ray, settings)
    return attempt


def submit(session: Session, job: Job, attempt: Attempt, ray: RayClient, settings: Settings) -> None:
    """Submit the attempt with its spec; a submission Ray rejects (4xx) fails the job at once.

    A transient failure leaves the attempt pending for the reconciler, which submits it again once
    ``RayClient.submit_due`` (backoff) and gives up after ``settings.submit_retry_s``: ``RayBusy`` (a 5xx
    or 429) is logged here; ``RayUnavailable`` (no answer at all) propagates, ending the pass.
    """
    try:
        ray.submit(attempt.ray_submission_id, attempt_spec(settings, job, attempt))
    except RayBusy as error:
        log.warning("job %s: submission %s deferred: %s", job.id, attempt.ray_submission_id, error)
    except RuntimeError as error:
        reason = f"Ray rejected the submission: {error}"
        end_attempt(job, attempt, reason, retry=False)
        session.commit()


def attempt_spec(settings: Settings, job: Job, attempt: Attempt) -> AttemptSpec:
    """What the attempt's worker needs: the validated config, where its run lives, how it scales. No
    password: the spec is readable through Ray's Jobs API, and workers take theirs from their node
    (``workers.credentials``)."""
    return AttemptSpec(
        attempt_id=attempt.id,
        job_id=job.id,
        config=TrainConfig.model_validate(job.config),
        storage_uri=settings.resolved_storage_uri,
        run_name=run_name(job),
        database_url=without_password(settings.resolved_database_url),
        mlflow_tracking_uri=without_password(settings.resolved_mlflow_uri),
        heartbeat_interval_s=settings.heartbeat_interval_s,
        scaling=job.scaling,
    )


def end_attempt(job: Job, attempt: Attempt, error: str, *, retry: bool) -> None:
    """Fail an attempt; re-queue the job while retries remain (and ``retry``), else fail the job."""
    attempt.status, attempt.error, attempt.finished_at = AttemptStatus.FAILED, error, utcnow()
    if retry and job.retries_used < job.max_retries:
        job.retries_used += 1
        move(job, JobStatus.QUEUED)
        log.warning("job %s attempt %s failed, retry %s/%s: %s", job.id, attempt.number, job.retries_used,
                    job.max_retries, error.splitlines()[0] if error else "")
        return
    finish(job, JobStatus.FAILED, error=f"attempt {attempt.number} failed: {error}")


def finish(job: Job, status: JobStatus, error: str | None = None) -> None:
    """Move ``job`` to a terminal ``status``. Its MLflow run (and its sweep's, once all cells ended) is
    closed by ``service.tracking.mlflow_sync``'s thread, which reads the committed state."""
    move(job, status)
    job.finished_at = utcnow()
    if error is not None:
        job.error = error
