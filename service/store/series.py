"""Read metric series from ``metric_points`` (key job_id, name, step: every read is an index range scan)."""

from __future__ import annotations

import itertools
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from service.store.models import MetricPoint


@dataclass
class SeriesData:
    steps: list[int] = field(default_factory=list)
    values: list[float] = field(default_factory=list)


def read_series(
    session: Session, job_id: int, names: Sequence[str] | None = None, since_step: int | None = None
) -> dict[str, SeriesData]:
    """Points of ``job_id`` in step order per name; only ``names`` if given, only steps > ``since_step``."""
    statement = select(MetricPoint.name, MetricPoint.step, MetricPoint.value).where(MetricPoint.job_id == job_id)
    if names:
        statement = statement.where(MetricPoint.name.in_(names))
    if since_step is not None:
        statement = statement.where(MetricPoint.step > since_step)
    rows = session.connection().execute(statement.order_by(MetricPoint.name, MetricPoint.step)).all()
    series: dict[str, SeriesData] = {}
    for name, points in itertools.groupby(rows, key=operator.itemgetter(0)):
        _, steps, values = zip(*points, strict=True)
        series[name] = SeriesData(list(steps), list(values))
    return series


def metric_names(session: Session, job_id: int) -> list[str]:
    return list(
        session.scalars(
            select(MetricPoint.name).where(MetricPoint.job_id == job_id).distinct().order_by(MetricPoint.name)
        )
    )


def latest_values(session: Session, job_ids: Sequence[int], names: Sequence[str]) -> dict[int, dict[str, float]]:
    """The value at the highest step of each (job, name), for many jobs in one query."""
    if not job_ids or not names:
        return {}
    newest = (
        select(MetricPoint.job_id, MetricPoint.name, func.max(MetricPoint.step).label("step"))
        .where(MetricPoint.job_id.in_(job_ids), MetricPoint.name.in_(names))
        .group_by(MetricPoint.job_id, MetricPoint.name)
        .subquery()
    )
    rows = session.execute(
        select(MetricPoint.job_id, MetricPoint.name, MetricPoint.value).join(
            newest,
            and_(
                MetricPoint.job_id == newest.c.job_id,
                MetricPoint.name == newest.c.name,
                MetricPoint.step == newest.c.step,
            ),
        )
    )
    values: dict[int, dict[str, float]] = {}
    for job_id, name, value in rows:
        values.setdefault(job_id, {})[name] = value
    return values
