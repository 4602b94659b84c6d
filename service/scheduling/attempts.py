"""Launching and ending attempts, and every change of a job's or an attempt's status: the scheduler
(``service.scheduling.scheduler``) decides what happens to a job, this module records it.

An attempt row (with its Ray submission id) is committed before anything is submitted, so a crash
at any point leaves a row the reconciler can match against Ray: nothing is lost, nothing doubled.
A job's status changes only through ``move`` (``service.store.states.check_transition``). An attempt is
current (its worker may write: ``workers.fence``) from ``start_attempt`` until ``end_attempt``,
``succeed`` or ``stopped`` ends it, and a job gets a new attempt only once its current one has ended.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

from sqlalchemy.orm import Session, object_session

from mmae.config import TrainConfig
from service.cluster.ray_client import RayBusy
from service.scheduling.context import SchedulerContext
from service.settings import Settings
from service.store.clock import utcnow
from service.store.models import Attempt, Job
from service.store.states import AttemptStatus, JobStatus, check_transition
from workers.credentials import without_password
from workers.spec import AttemptSpec

log = logging.getLogger(__name__)
# A key of ``Session.info``: set once the session moved a job, so the scheduler wakes the MLflow sync only
# after steps that changed something.
STATUS_CHANGED = "mmae.status_changed"


def run_name(job: Job) -> str:
    """The name of the run storage every attempt of ``job`` shares (checkpoints), under the storage URI.

    ``job-<id>-<random>`` is chosen on first use and stored on the job (the caller commits it): a job
    whose id a reset database reuses never resumes an older job's checkpoint.
    """
    if job.run_dir_name is None:
        job.run_dir_name = f"job-{job.id}-{secrets.token_hex(4)}"
    return job.run_dir_name


def move(job: Job, status: JobStatus, *, user_retry: bool = False) -> None:
    """Set ``job.status`` along an edge of the state machine, or a user's retry's when ``user_retry``
    (raises ``InvalidTransition`` otherwise)."""
    check_transition(JobStatus(job.status), status, user_retry=user_retry)
    job.status = status
    if (session := object_session(job)) is not None:
        session.info[STATUS_CHANGED] = True


def start_attempt(session: Session, context: SchedulerContext, job: Job) -> Attempt:
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
    submit(session, context, job, attempt)
    return attempt


def submit(session: Session, context: SchedulerContext, job: Job, attempt: Attempt) -> None:
    """Submit the attempt with its spec; a submission Ray rejects (4xx) fails the job at once.

    A transient failure leaves the attempt pending for the reconciler, which submits it again once
    ``RayClient.submit_due`` (backoff) and gives up after ``settings.submit_retry_s``: ``RayBusy`` (a 5xx
    or 429) is logged here; ``RayUnavailable`` (no answer at all) propagates, ending the pass.
    """
    try:
        context.ray.submit(attempt.ray_submission_id, attempt_spec(context.settings, job, attempt))
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


def mark_running(job: Job, attempt: Attempt) -> None:
    """Ray runs the attempt: a pending attempt is running now, and so is its starting job."""
    if attempt.status == AttemptStatus.PENDING:
        attempt.status, attempt.started_at = AttemptStatus.RUNNING, utcnow()
    if job.status == JobStatus.STARTING:
        move(job, JobStatus.RUNNING)
        job.started_at = job.started_at or utcnow()


def succeed(job: Job, attempt: Attempt, summary: dict[str, Any] | None) -> None:
    """The attempt finished training: it and its job succeeded, with the job's final metrics."""
    attempt.status, attempt.finished_at = AttemptStatus.SUCCEEDED, utcnow()
    job.record_summary(summary)
    finish(job, JobStatus.SUCCEEDED)


def stopped(job: Job, attempt: Attempt) -> None:
    """Ray ended the attempt of a cancelling job: the attempt is stopped, the job cancelled."""
    attempt.status, attempt.finished_at = AttemptStatus.STOPPED, utcnow()
    finish(job, JobStatus.CANCELLED)


def end_attempt(job: Job, attempt: Attempt, error: str, *, retry: bool) -> None:
    """Fail an attempt; re-queue the job while retries remain (and ``retry``), else fail the job."""
    attempt.status, attempt.error, attempt.finished_at = AttemptStatus.FAILED, error, utcnow()
    if retry and job.retries_used < job.max_retries:
        job.retries_used += 1
        move(job, JobStatus.QUEUED)
        log.warning(
            "job %s attempt %s failed, retry %s/%s: %s",
            job.id,
            attempt.number,
            job.retries_used,
            job.max_retries,
            error.splitlines()[0] if error else "",
        )
        return
    finish(job, JobStatus.FAILED, error=f"attempt {attempt.number} failed: {error}")


def finish(job: Job, status: JobStatus, error: str | None = None) -> None:
    """Move ``job`` to a terminal ``status``. Its MLflow run (and its sweep's, once all cells ended) is
    closed by ``service.tracking.mlflow_sync``'s thread, which reads the committed state."""
    move(job, status)
    job.finished_at = utcnow()
    if error is not None:
        job.error = error


def requeue(job: Job) -> None:
    """A user's retry: a failed or cancelled job goes back to the end of the queue with a fresh retry
    budget (raises ``InvalidTransition`` for any other job)."""
    move(job, JobStatus.QUEUED, user_retry=True)
    job.retries_used, job.error = 0, None
    job.record_summary(None)
    job.finished_at, job.cancel_requested_at, job.queued_at = None, None, utcnow()
