"""Jobs: create (idempotent), list (filters, sort, pagination), read, cancel, retry, logs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy.orm import Session

from mmae.config import Method
from service.api.deps import (
    PrincipalDep,
    RayDep,
    ReadsDep,
    SchedulerContextDep,
    SessionDep,
    SettingsDep,
    WakeSchedulerDep,
    ensure_may_change,
    require_token,
)
from service.api.routes.params import MAX_ID, IdempotencyKey, JobId, Limit, Offset
from service.api.strict_json import StrictJsonRoute
from service.api.views import job_out, job_summary
from service.auth import Principal
from service.cluster.ray_client import RayClient, RayUnavailable
from service.scheduling import allocation, scheduler
from service.scheduling.submit import create_job
from service.schemas import JobCreate, JobOut, JobPage, Label, LogsOut, SortKey
from service.settings import Settings
from service.store.job_queries import JobFilters, get_job, job_view, list_jobs
from service.store.models import Job
from service.store.states import JobStatus

router = APIRouter(prefix="/api/jobs", tags=["jobs"], dependencies=[require_token], route_class=StrictJsonRoute)

SearchText = Annotated[str | None, Query(max_length=200, pattern=r"^[^\x00]*$")]


def load_job_out(session: Session, settings: Settings, job_id: int) -> JobOut:
    """The full Job view: attempts, newest progress, and the collapse flag from the newest erank."""
    return job_out(*job_view(session, job_id), settings)


def load_job_page(
    session: Session, settings: Settings, filters: JobFilters, sort: str, limit: int, offset: int
) -> JobPage:
    """One page of job summaries and the total matching ``filters``."""
    rows, total = list_jobs(session, filters, sort, limit, offset)
    items = [job_summary(*row, settings) for row in rows]
    return JobPage(items=items, total=total, limit=limit, offset=offset)


@router.post("", status_code=201)
def create(
    body: JobCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    wake: WakeSchedulerDep,
    caller: PrincipalDep,
    ray: RayDep,
    idempotency_key: IdempotencyKey = None,
) -> JobOut:
    """Queue a job owned by the caller's owner; replaying an ``Idempotency-Key`` with the same request returns
    the job it created (200), with a different request a 409 (keys are per token)."""
    resources = allocation.resolved(body.resources, ray)
    job, created = create_job(session, body, resources, idempotency_key, settings.data_roots, caller)
    if created:
        wake()
    else:
        response.status_code = 200
    return load_job_out(session, settings, job.id)


@router.get("")
async def index(
    reads: ReadsDep,
    settings: SettingsDep,
    status: Annotated[list[JobStatus] | None, Query()] = None,
    method: Method | None = None,
    sweep_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
    tag: Label | None = None,
    q: SearchText = None,
    sort: SortKey = "-created_at",
    limit: Limit = 50,
    offset: Offset = 0,
) -> JobPage:
    """One page of jobs; ``status`` may repeat (``?status=queued&status=running``)."""
    filters = JobFilters(status=[str(s) for s in status or ()], method=method, sweep_id=sweep_id, tag=tag, q=q)
    return await reads.run(load_job_page, settings, filters, sort, limit, offset)


def change_job(session: Session, caller: Principal, job_id: int, change: Callable[[Job], None]) -> None:
    """Apply a state change to the job (403 unless ``caller`` may change its owner's work). The scheduler's
    change re-reads the job and decides again when the scheduler loop changed it first."""
    job = get_job(session, job_id, with_attempts=True)
    ensure_may_change(caller, job.owner, f"job {job_id}")
    change(job)


@router.get("/{job_id}")
async def read(job_id: JobId, reads: ReadsDep, settings: SettingsDep) -> JobOut:
    return await reads.run(load_job_out, settings, job_id)


@router.post("/{job_id}/cancel", status_code=202)
def cancel(job_id: JobId, session: SessionDep, context: SchedulerContextDep, caller: PrincipalDep) -> JobOut:
    """Ask a job to stop: queued jobs are cancelled at once, running ones get a cooperative stop (409 when
    it already ended; 403 for another owner's job unless the caller is an admin)."""
    change_job(session, caller, job_id, lambda job: scheduler.request_cancel(session, context, job))
    return load_job_out(session, context.settings, job_id)


@router.post("/{job_id}/retry", status_code=202)
def retry(
    job_id: JobId, session: SessionDep, settings: SettingsDep, wake: WakeSchedulerDep, caller: PrincipalDep
) -> JobOut:
    """Re-queue a failed or cancelled job (409 otherwise; 403 for another owner's job unless the caller is an
    admin); it resumes from its last checkpoint."""
    change_job(session, caller, job_id, lambda job: scheduler.retry_job(session, job))
    wake()
    return load_job_out(session, settings, job_id)


@router.get("/{job_id}/logs")
def logs(
    job_id: JobId, session: SessionDep, ray: RayDep, tail: Annotated[int, Query(ge=1, le=10_000)] = 500
) -> LogsOut:
    """The last ``tail`` lines of the Ray logs of the job's attempts, newest attempt last."""
    job = get_job(session, job_id, with_attempts=True)
    lines: list[str] = []
    for attempt in job.attempts:
        lines.append(f"--- attempt {attempt.number} ({attempt.ray_submission_id}) ---")
        lines.extend(attempt_log(ray, attempt.ray_submission_id, tail))
    return LogsOut(lines=lines[-tail:])


def attempt_log(ray: RayClient, submission_id: str | None, tail: int) -> list[str]:
    """The tail of one attempt's Ray log; a note instead when Ray cannot be asked (never starts a head)."""
    if not submission_id:
        return []
    if not ray.connected:
        return ["(Ray is not connected from this process; logs unavailable)"]
    try:
        return ray.logs(submission_id).splitlines()[-tail:]
    except RayUnavailable as error:
        return [f"(logs unavailable: {error})"]
