"""Behind the live event stream: incremental reads (only points newer than what a client already has),
and the per-token count of open streams."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.store.models import MetricPoint
from service.store.series import SeriesData


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


class StreamSlots:
    """How many event streams each token has open in this process, at most ``limit`` each (a fair share:
    one token cannot tie up the API with streams). Only the event loop's thread touches it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[int] = Counter()

    def take(self, token_id: int) -> bool:
        """Count a new stream of ``token_id``; False (nothing counted) when it already has ``limit`` open."""
        if self.open[token_id] >= self.limit:
            return False
        self.open[token_id] += 1
        return True

    def give_back(self, token_id: int) -> None:
        self.open[token_id] -= 1
        if self.open[token_id] <= 0:
            del self.open[token_id]
