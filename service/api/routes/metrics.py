"""Metric series of a job, downsampled for plotting, and the names it has."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.orm import Session

from service.api.deps import ReadsDep, require_token
from service.api.routes.params import JobId, MaxPoints, SinceStep
from service.api.views import series_out
from service.schemas import MetricsOut
from service.store.job_queries import get_job
from service.store.series import metric_names, read_series

router = APIRouter(prefix="/api/jobs", tags=["metrics"], dependencies=[require_token])


def parse_names(names: str | None) -> list[str]:
    return [name.strip() for name in (names or "").split(",") if name.strip()]


@router.get("/{job_id}/metrics")
async def metrics(
    job_id: JobId,
    reads: ReadsDep,
    names: Annotated[str | None, Query(max_length=4000, pattern=r"^[^\x00]*$")] = None,
    max_points: MaxPoints = 1000,
    since_step: SinceStep = None,
) -> MetricsOut:
    """``{"series": {name: {"steps", "values"}}}``, each series at most ``max_points`` long (first/last and
    extremes kept); ``names`` is comma-separated (all series when omitted)."""
    return await reads.run(load_metrics, job_id, parse_names(names), max_points, since_step)


def load_metrics(
    session: Session, job_id: int, names: list[str], max_points: int, since_step: int | None
) -> MetricsOut:
    get_job(session, job_id)
    series = read_series(session, job_id, names, since_step)
    return MetricsOut(series={name: series_out(data, max_points) for name, data in series.items()})


@router.get("/{job_id}/metrics/names")
async def names(job_id: JobId, reads: ReadsDep) -> list[str]:
    return await reads.run(load_names, job_id)


def load_names(session: Session, job_id: int) -> list[str]:
    get_job(session, job_id)
    return metric_names(session, job_id)
