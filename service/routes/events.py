"""Server-sent events for a live job page: ``job`` on every change, ``metrics`` with the new points.

One loop per connection, about one read per second: the job view plus the metric points newer than
those already sent (an index range scan). The first ``metrics`` event carries the history, each
series downsampled to ``max_points``; later ones carry only new points. The stream ends once the job
is terminal and its last points are sent. Sessions are opened per tick, never held across sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.orm import Session

from service.deps import ReadsDep, SettingsDep, require_token
from service.job_queries import get_job
from service.live import MetricsCursor
from service.routes.jobs import load_job_out
from service.routes.params import JobId, MaxPoints, SinceStep
from service.schemas import JobOut
from service.series import SeriesData
from service.settings import Settings
from service.states import TERMINAL, JobStatus
from service.views import series_out

router = APIRouter(prefix="/api/jobs", tags=["events"], dependencies=[require_token])

TICK_S = 1.0


async def existing_job(job_id: JobId, reads: ReadsDep) -> int:
    """404 before the stream starts (a short session: nothing stays checked out while streaming)."""
    await reads.run(get_job, job_id)
    return job_id


@router.get("/{job_id}/events", response_class=EventSourceResponse)
async def events(
    job_id: Annotated[int, Depends(existing_job)],
    reads: ReadsDep,
    settings: SettingsDep,
    since_step: SinceStep = None,
    max_points: MaxPoints = 1000,
    tick_s: Annotated[float, Query(ge=0.2, le=30)] = TICK_S,
) -> AsyncIterator[ServerSentEvent]:
    cursor = MetricsCursor(job_id, since_step=-1 if since_step is None else since_step)
    last_job = None
    first = True
    while True:
        job, series = await reads.run(_tick, settings, job_id, cursor)
        payload = job.model_dump_json()
        if payload != last_job:
            last_job = payload
            yield ServerSentEvent(event="job", raw_data=payload)
        if series or first:
            limit = max_points if first else None
            data = {"series": {name: series_out(s, limit).model_dump() for name, s in series.items()}}
            yield ServerSentEvent(event="metrics", data=data)
        first = False
        if JobStatus(job.status) in TERMINAL:
            return
        await asyncio.sleep(tick_s)


def _tick(
    session: Session, settings: Settings, job_id: int, cursor: MetricsCursor
) -> tuple[JobOut, dict[str, SeriesData]]:
    """Read the job view and the new points in one short session (runs in a worker thread)."""
    return load_job_out(session, settings, job_id), cursor.read(session)
