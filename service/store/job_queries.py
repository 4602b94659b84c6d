"""Read jobs for the API: one filtered, sorted, paginated query plus batched look-ups (no N+1).

The job list reads plain rows (SQLAlchemy Core, no ORM identity map) of every jobs column but the full
config, which ``params`` stands in for: on a page of 50 jobs that is a third of the CPU of loading
ORM entities. A job's own view loads the ORM entity with its attempts.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, Row, Select, String, and_, bindparam, cast, exists, func, select
from sqlalchemy.orm import Session, aliased, joinedload, selectinload

from service.errors import NotFound
from service.store.models import AttemptProgress, Job, MetricPoint, Sweep

ERANK = "info/erank"  # Def. 5.1 effective rank, shown beside the collapse alarm
ERANK_CENTERED = "info/erank_centered"  # the directions the features vary in: the collapse alarm's measure
SUMMARY_COLUMNS = tuple(column for column in Job.__table__.c if column.name != "config")
PROGRESS_FIELDS = ("step", "total_steps", "phase", "run_info", "summary")


class ProgressRow(NamedTuple):
    """A job's newest progress as the job list reads it (the fields views use of an AttemptProgress)."""

    step: int
    total_steps: int
    phase: str
    run_info: dict[str, Any] | None
    summary: dict[str, Any] | None


class NewestRanks(NamedTuple):
    """A job's newest ``info/erank`` and ``info/erank_centered`` (None before the first measurement)."""

    erank: float | None
    centered: float | None


# A job (ORM entity, or a Core row of SUMMARY_COLUMNS), its newest progress, its newest effective ranks.
JobRow = tuple[Job | Row, AttemptProgress | ProgressRow | None, NewestRanks]


@dataclass(frozen=True)
class JobFilters:
    status: Sequence[str] = ()
    method: str | None = None
    sweep_id: int | None = None
    tag: str | None = None
    q: str | None = None  # substring of the name, case-insensitive


NULLABLE_SORT_KEYS = frozenset({"linear_top1"})  # jobs without an evaluation sort last either way


def _sort_column(key: str) -> ColumnElement:
    columns: dict[str, ColumnElement] = {
        "created_at": Job.created_at,
        "priority": Job.priority,
        "status": Job.status,
        "method": Job.method,
        "name": Job.name,
        "linear_top1": Job.linear_top1,
    }
    return columns[key]


def _filtered(statement: Select, filters: JobFilters) -> Select:
    if filters.status:
        statement = statement.where(Job.status.in_(filters.status))
    if filters.method:
        statement = statement.where(Job.method == filters.method)
    if filters.sweep_id is not None:
        statement = statement.where(Job.sweep_id == filters.sweep_id)
    if filters.tag:
        # Tags are restricted to [A-Za-z0-9_.:=+/-], so the quoted JSON string is an exact element match.
        statement = statement.where(cast(Job.tags, String).contains(f'"{filters.tag}"', autoescape=True))
    if filters.q:
        statement = statement.where(func.lower(Job.name).contains(filters.q.lower(), autoescape=True))
    return statement


def list_jobs(session: Session, filters: JobFilters, sort: str, limit: int, offset: int) -> tuple[list[JobRow], int]:
    """One page of jobs (with progress and eranks) and the total matching ``filters``; ``sort`` is a key,
    ``-`` prefix: descending."""
    descending, name = sort.startswith("-"), sort.removeprefix("-")

    def ordering(key: ColumnElement, row_id: ColumnElement) -> list[ColumnElement]:
        # Only the nullable key says NULLS LAST: on the others it would stop PostgreSQL using their index.
        first = key.desc() if descending else key.asc()
        if name in NULLABLE_SORT_KEYS:
            first = first.nulls_last()
        return [first, row_id.desc() if descending else row_id.asc()]

    # Deferred join: sort and cut narrow (id, key) rows, then load the page's full rows only. The count
    # is a separate query so the page can stop at ``offset + limit`` rows of an index.
    key = _sort_column(name).label("sort_key")
    page = (
        _filtered(select(Job.id, key), filters).order_by(*ordering(key, Job.id)).limit(limit).offset(offset).subquery()
    )
    in_order = ordering(page.c.sort_key, page.c.id)
    progress = [AttemptProgress.attempt_id.label("progress_attempt_id")]
    progress += [getattr(AttemptProgress, name).label(f"progress_{name}") for name in PROGRESS_FIELDS]
    statement = _with_progress(select(*SUMMARY_COLUMNS).join(page, Job.id == page.c.id), *progress)
    rows = session.connection().execute(statement.order_by(*in_order)).all()
    total = session.scalar(_filtered(select(func.count()).select_from(Job), filters)) or 0
    return [_split_summary_row(row) for row in rows], total


def _split_summary_row(row: Row) -> JobRow:
    """A list row as (the job's columns, its newest progress or None, its newest effective ranks)."""
    progress = None
    if row.progress_attempt_id is not None:
        progress = ProgressRow(*(getattr(row, f"progress_{name}") for name in PROGRESS_FIELDS))
    return row, progress, NewestRanks(row.erank, row.erank_centered)


def job_view(session: Session, job_id: int) -> JobRow:
    """A job with its attempts, its newest progress row and its newest effective ranks, in one query."""
    row = session.execute(_job_view(), {"job_id": job_id}).unique().first()
    if row is None:
        raise NotFound(f"job {job_id} not found")
    job, progress, erank, centered = row
    return job, progress, NewestRanks(erank, centered)


@functools.cache
def _job_view() -> Select:
    """``job_view``'s statement, built once (so is its cache key): the job id is a bind parameter."""
    statement = _with_progress(select(Job).where(Job.id == bindparam("job_id")), AttemptProgress)
    return statement.options(joinedload(Job.attempts))


def _with_progress(statement: Select, *progress: Any) -> Select:
    """``statement`` (from jobs) with ``progress`` (columns or the entity) of each job's newest progress row
    (outer join) and its newest ``info/erank`` and ``info/erank_centered`` (as ``erank``, ``erank_centered``)."""
    newer = aliased(AttemptProgress)
    newest_progress = and_(
        AttemptProgress.job_id == Job.id,
        ~exists().where(newer.job_id == Job.id, newer.attempt_id > AttemptProgress.attempt_id),
    )
    ranks = (_newest_value(ERANK).label("erank"), _newest_value(ERANK_CENTERED).label("erank_centered"))
    return statement.add_columns(*progress, *ranks).outerjoin(AttemptProgress, newest_progress)


def _newest_value(name: str) -> Any:
    """The value of a job's newest point of metric ``name`` (a correlated scalar subquery on its index)."""
    return (
        select(MetricPoint.value)
        .where(MetricPoint.job_id == Job.id, MetricPoint.name == name)
        .order_by(MetricPoint.step.desc())
        .limit(1)
        .scalar_subquery()
    )


def get_job(session: Session, job_id: int, *, with_attempts: bool = False) -> Job:
    options = [selectinload(Job.attempts)] if with_attempts else []
    job = session.get(Job, job_id, options=options)
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def get_sweep(session: Session, sweep_id: int) -> Sweep:
    sweep = session.get(Sweep, sweep_id)
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def latest_progress(session: Session, job_ids: Sequence[int]) -> dict[int, AttemptProgress]:
    """Progress row of each job's newest attempt that reported one."""
    if not job_ids:
        return {}
    rows = session.scalars(
        select(AttemptProgress).where(AttemptProgress.job_id.in_(job_ids)).order_by(AttemptProgress.attempt_id)
    )
    return {row.job_id: row for row in rows}


def status_counts(session: Session, sweep_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    """``{sweep_id: {status: number of cells}}`` in one grouped query."""
    counts: dict[int, dict[str, int]] = {sweep_id: {} for sweep_id in sweep_ids}
    if not sweep_ids:
        return counts
    rows = session.execute(
        select(Job.sweep_id, Job.status, func.count(Job.id))
        .where(Job.sweep_id.in_(sweep_ids))
        .group_by(Job.sweep_id, Job.status)
    )
    for sweep_id, status, number in rows:
        counts[sweep_id][status] = number
    return counts
