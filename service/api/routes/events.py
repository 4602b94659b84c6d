"""Server-sent events for a live job page: ``job`` on every change, ``metrics`` with the new points.

One loop per connection, about one read per second: the job view plus the metric points newer than
those already sent (an index range scan). The first ``metrics`` event carries the history, each
series downsampled to ``max_points``; later ones carry only new points. The stream ends once the job
is terminal and its last points are sent. Sessions are opened per tick, never held across sleeps.

Each token may hold ``MMAE_MAX_STREAMS_PER_TOKEN`` streams open per API process; one more is a 429.
A stream's slot is given back when it ends, whether the job finished or the client went away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.orm import Session

from service.api.deps import PrincipalDep, ReadsDep, SettingsDep, require_token
from service.api.live import MetricsCursor, StreamSlots
from service.api.routes.jobs import load_job_out
from service.api.routes.params import JobId, MaxPoints, SinceStep
from service.api.views import series_out
from service.schemas import JobOut
from service.settings import Settings
from service.store.job_queries import get_job
from service.store.series import SeriesData
from service.store.states import TERMINAL, JobStatus

router = APIRouter(prefix="/api/jobs", tags=["events"], dependencies=[require_token])

TICK_S = 1.0


async def existing_job(job_id: JobId, reads: ReadsDep) -> int:
    """404 before the stream starts (a short session: nothing stays checked out while streaming)."""
    await reads.run(get_job, job_id)
    return job_id


async def stream_slot(request: Request, caller: PrincipalDep) -> AsyncIterator[None]:
    """Hold one of the caller's stream slots for as long as the response streams; 429 when all are taken.
    (A dependency with ``yield``: its exit runs after the response ends, a client's disconnect included.)"""
    slots: StreamSlots = request.app.state.stream_slots
    if not slots.take(caller.token_id):
        raise HTTPException(
            status_code=429,
            detail=f"token '{caller.name}' already has {slots.limit} event streams open "
            "(MMAE_MAX_STREAMS_PER_TOKEN); close one first",
        )
    try:
        yield
    finally:
        slots.give_back(caller.token_id)


@router.get("/{job_id}/events", response_class=EventSourceResponse, dependencies=[Depends(stream_slot)])
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
