"""Sweeps: create (expand the parameter space into cells, idempotently), list, read, table, report, retry-failed."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select
from sqlalchemy.orm.exc import StaleDataError

from service.api.deps import (
    PrincipalDep,
    RayDep,
    ReadsDep,
    SessionDep,
    SettingsDep,
    WakeSchedulerDep,
    ensure_may_change,
    require_token,
)
from service.api.routes.params import IdempotencyKey, Limit, Offset, SweepId
from service.api.strict_json import StrictJsonRoute
from service.api.views import LIVE_METRICS, sweep_out, sweep_table
from service.errors import validation_error
from service.scheduling import allocation, scheduler
from service.scheduling.submit import create_sweep
from service.scheduling.sweeps import SweepSpecError, expand
from service.schemas import RetriedOut, SweepCreate, SweepOut, SweepPage, SweepTable
from service.store.job_queries import get_job, get_sweep, latest_progress, status_counts
from service.store.models import Job, Sweep
from service.store.series import latest_values
from service.store.states import InvalidTransition, JobStatus
from service.tracking.sweep_report import load_report

router = APIRouter(prefix="/api/sweeps", tags=["sweeps"], dependencies=[require_token], route_class=StrictJsonRoute)

RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
# The report page runs nothing and loads nothing: inline CSS and SVG only.
REPORT_POLICY = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"


@router.post("", status_code=201)
def create(
    body: SweepCreate,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
    wake: WakeSchedulerDep,
    caller: PrincipalDep,
    ray: RayDep,
    idempotency_key: IdempotencyKey = None,
) -> SweepOut:
    """Queue one job per distinct cell; the same name with the same cells returns the existing sweep (200)."""
    resources = allocation.resolved(body.resources, ray)
    try:
        cells = expand(body, settings.max_sweep_cells)
    except SweepSpecError as error:
        raise validation_error(("body", *error.loc), str(error)) from error
    sweep, created = create_sweep(session, body, cells, resources, idempotency_key, settings.data_roots, caller)
    if created:
        wake()
    else:
        response.status_code = 200
    return sweep_out(sweep, status_counts(session, [sweep.id])[sweep.id], settings)


@router.get("")
def index(session: SessionDep, settings: SettingsDep, limit: Limit = 50, offset: Offset = 0) -> SweepPage:
    sweeps = session.scalars(select(Sweep).order_by(Sweep.id.desc()).limit(limit).offset(offset)).all()
    counts = status_counts(session, [sweep.id for sweep in sweeps])
    total = session.scalar(select(func.count(Sweep.id))) or 0
    items = [sweep_out(sweep, counts[sweep.id], settings) for sweep in sweeps]
    return SweepPage(items=items, total=total, limit=limit, offset=offset)


@router.get("/{sweep_id}")
def read(sweep_id: SweepId, session: SessionDep, settings: SettingsDep) -> SweepOut:
    sweep = get_sweep(session, sweep_id)
    return sweep_out(sweep, status_counts(session, [sweep.id])[sweep.id], settings)


@router.get("/{sweep_id}/table")
def table(sweep_id: SweepId, session: SessionDep) -> SweepTable:
    """One row per cell: its parameter values, status, progress and metrics (summary, or live values)."""
    sweep = get_sweep(session, sweep_id)
    jobs = session.scalars(select(Job).where(Job.sweep_id == sweep.id).order_by(Job.id)).all()
    ids = [job.id for job in jobs]
    progress = latest_progress(session, ids)
    live = latest_values(session, ids, LIVE_METRICS)
    return sweep_table(sweep, jobs, progress, live)


@router.get("/{sweep_id}/report", response_class=HTMLResponse)
async def report(sweep_id: SweepId, reads: ReadsDep) -> HTMLResponse:
    """The sweep's reproduction report: one self-contained HTML page (``service.tracking.report``). Reading it writes
    nothing; the scheduler's MLflow thread stores it on the parent run when the sweep ends."""
    html = await reads.run(load_report, sweep_id)
    headers = {"Content-Security-Policy": REPORT_POLICY, "X-Content-Type-Options": "nosniff"}
    return HTMLResponse(html, headers=headers)


@router.post("/{sweep_id}/retry-failed")
def retry_failed(sweep_id: SweepId, session: SessionDep, wake: WakeSchedulerDep, caller: PrincipalDep) -> RetriedOut:
    """Re-queue only the failed and cancelled cells (each resumes from its last checkpoint); 403 for another
    owner's sweep unless the caller is an admin."""
    sweep = get_sweep(session, sweep_id)
    ensure_may_change(caller, sweep.owner, f"sweep {sweep_id}")
    ids = session.scalars(
        select(Job.id).where(Job.sweep_id == sweep.id, Job.status.in_(RETRYABLE)).order_by(Job.id)
    ).all()
    retried = []
    for job_id in ids:
        try:
            scheduler.retry_job(session, get_job(session, job_id))
            retried.append(job_id)
        except (StaleDataError, InvalidTransition):  # retried meanwhile by another request, or kept changing
            session.rollback()
    if retried:
        wake()
    return RetriedOut(retried=retried)
