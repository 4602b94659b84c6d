"""Incremental reads behind the live event stream: only points newer than what a client already has."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.models import MetricPoint
from service.series import SeriesData


@dataclass
class MetricsCursor:
    """Remembers, per series, the last step sent; each read scans only steps >= the newest step seen.

    Re-reading the newest step (not just the steps after it) catches metrics that a worker flushed
    for the same step in a later batch (``eval/*`` at the final step, for instance).
    """

    job_id: int
    since_step: int = -1  # the client already has every point up to this step
    sent: dict[str, int] = field(default_factory=dict)
    floor: int | None = None

    def read(self, session: Session) -> dict[str, SeriesData]:
        low = self.since_step + 1 if self.floor is None else self.floor
        rows = session.execute(
            select(MetricPoint.name, MetricPoint.step, MetricPoint.value)
            .where(MetricPoint.job_id == self.job_id, MetricPoint.step >= low)
            .order_by(MetricPoint.step, MetricPoint.name)
        )
        fresh: dict[str, SeriesData] = {}
        for name, step, value in rows:
            self.floor = step if self.floor is None else max(self.floor, step)
            if step <= self.sent.get(name, self.since_step):
                continue
            data = fresh.setdefault(name, SeriesData())
            data.steps.append(step)
            data.values.append(value)
            self.sent[name] = step
        return fresh
