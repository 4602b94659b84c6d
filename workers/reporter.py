"""The reporter callback: batched metric points and attempt progress into SQL, then MLflow.

Points are buffered and flushed every ``flush_points`` points or ``flush_interval_s`` seconds, at
every checkpoint, on status changes and at the end. A flush upserts ``metric_points`` on
(job_id, name, step), with the attempt's progress row, in one transaction: a retried or resumed
attempt that re-emits a step overwrites it, so SQL never loses or doubles a point. MLflow only
appends, so it is guarded by a high-water mark: when the reporter first reaches the job's run (at the
start, or at a later flush when the service created the run after submitting the attempt), points SQL
has beyond what MLflow has are sent first (backfill after a crash between the two writes), and
re-emitted steps at or below SQL's mark are not sent again. Non-finite numbers in the progress row's
JSON (run info, summary) are stored as null.

Every write is fenced (``workers.fence``): a flush commits only while its attempt is the job's current
one, and MLflow is sent only what a fenced flush committed, after checking the fence again. A flush
that finds its attempt fenced writes nothing and raises ``AttemptFenced``, which ends ``fit``; so does a
checkpoint about to be published by a fenced attempt (``before_checkpoint_publish``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Double,
    Engine,
    Integer,
    String,
    bindparam,
    create_engine,
    func,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from mmae.callbacks import Callback, RunInfo, TrainResult
from workers.fence import check_current
from workers.tables import attempt_progress, json_finite, metric_points
from workers.tracking import RunTracker, Series

log = logging.getLogger(__name__)


def connect(database_url: str) -> Engine:
    """Engine for the worker's short writes (SQLite waits up to 30 s for the writer lock)."""
    if database_url.startswith("sqlite"):
        return create_engine(database_url, connect_args={"timeout": 30})
    return create_engine(database_url, pool_pre_ping=True, pool_size=1, max_overflow=1)


def upsert_points(
    connection: Connection, job_id: int, attempt_id: int, logged_at: datetime, points: dict[tuple[str, int], float]
) -> None:
    """Store one attempt's ``{(name, step): value}`` points, overwriting any existing (job_id, name, step).

    PostgreSQL gets the whole batch as three arrays in one ``INSERT ... SELECT FROM unnest(...)``
    statement; SQLite an ``executemany`` of the same upsert.
    """
    if not points:
        return
    if connection.dialect.name == "postgresql":
        names, steps = zip(*points, strict=True)
        connection.execute(
            _unnest_upsert(),
            {"job_id": job_id, "attempt_id": attempt_id, "logged_at": logged_at,
             "names": list(names), "steps": list(steps), "values": list(points.values())},
        )
        return
    statement = sqlite.insert(metric_points)
    rows = [
        {"job_id": job_id, "name": name, "step": step, "value": value, "attempt_id": attempt_id,
         "logged_at": logged_at}
        for (name, step), value in points.items()
    ]
    connection.execute(_overwriting(statement), rows)


def _overwriting(statement: Any) -> Any:
    """``statement`` (a dialect insert into metric_points) replacing the value of an existing point."""
    return statement.on_conflict_do_update(
        index_elements=["job_id", "name", "step"],
        set_={key: statement.excluded[key] for key in ("value", "attempt_id", "logged_at")},
    )


@functools.cache
def _unnest_upsert() -> Any:
    """PostgreSQL's batch upsert: a row per element of the names/steps/values arrays."""
    points = func.unnest(
        bindparam("names", type_=postgresql.ARRAY(String)),
        bindparam("steps", type_=postgresql.ARRAY(BigInteger)),
        bindparam("values", type_=postgresql.ARRAY(Double)),
    ).table_valued("name", "step", "value").render_derived(name="point")
    source = select(
        bindparam("job_id", type_=Integer), points.c.name, points.c.step, points.c.value,
        bindparam("attempt_id", type_=Integer), bindparam("logged_at", type_=DateTime(timezone=True)),
    )
    columns = ["job_id", "name", "step", "value", "attempt_id", "logged_at"]
    return _overwriting(postgresql.insert(metric_points).from_select(columns, source))


def upsert_progress(connection: Connection, row: dict[str, Any]) -> None:
    """Insert or replace the ``attempt_progress`` row of ``row["attempt_id"]``."""
    dialect = {"sqlite": sqlite, "postgresql": postgresql}[connection.dialect.name]
    statement = dialect.insert(attempt_progress).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=["attempt_id"],
        set_={key: statement.excluded[key] for key in row if key != "attempt_id"},
    )
    connection.execute(statement)


def sql_high_water(engine: Engine, job_id: int) -> dict[str, int]:
    """Highest step stored per metric name of a job."""
    query = (
        select(metric_points.c.name, func.max(metric_points.c.step))
        .where(metric_points.c.job_id == job_id)
        .group_by(metric_points.c.name)
    )
    with engine.connect() as connection:
        return {name: int(step) for name, step in connection.execute(query)}


def read_series(engine: Engine, job_id: int, prefix: str = "", after: dict[str, int] | None = None) -> Series:
    """A job's points by name, ordered by step; only names under ``prefix`` and steps past ``after``."""
    query = (
        select(metric_points.c.name, metric_points.c.step, metric_points.c.value)
        .where(metric_points.c.job_id == job_id, metric_points.c.name.startswith(prefix))
        .order_by(metric_points.c.name, metric_points.c.step)
    )
    series: Series = {}
    with engine.connect() as connection:
        for name, step, value in connection.execute(query):
            if after is None or step > after.get(name, -1):
                steps, values = series.setdefault(name, ([], []))
                steps.append(int(step))
                values.append(float(value))
    return series


class Reporter(Callback):
    """Streams one attempt's metrics and progress to the control plane's database and MLflow run.

    ``find_tracker`` returns the job's MLflow run once it is known (the service creates it just after
    submitting the attempt); it is asked at the start and at every flush until it answers. The first
    send to a run found late backfills everything SQL already has.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        job_id: int,
        attempt_id: int,
        find_tracker: Callable[[], RunTracker | None] | None = None,
        flush_points: int = 5000,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.job_id, self.attempt_id, self.find_tracker = engine, job_id, attempt_id, find_tracker
        self.flush_points, self.flush_interval_s, self.clock = flush_points, flush_interval_s, clock
        self.tracker: RunTracker | None = None
        self._buffer: dict[tuple[str, int], float] = {}
        self._mlflow_pending: list[tuple[str, int, float, int]] = []
        self._mlflow_mark: dict[str, int] = {}
        self._tags: dict[str, str] = {}
        self._dropped: set[str] = set()
        self._last_flush = clock()
        self._progress: dict[str, Any] = {"step": 0, "total_steps": 0, "phase": "starting"}

    def on_train_start(self, info: RunInfo) -> None:
        self._progress.update(step=info.start_step, total_steps=info.total_steps, phase="training")
        self._progress["run_info"] = json_finite(dataclasses.asdict(info))
        self._tags = dict(info.tags)
        self._attach()
        self.flush()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            if math.isfinite(value):
                self._buffer[(name, step)] = float(value)
            elif name not in self._dropped:
                self._dropped.add(name)
                log.warning("dropping non-finite %s=%s at step %d (and later ones)", name, value, step)
        self._progress["step"] = max(self._progress["step"], step)
        if len(self._buffer) >= self.flush_points or self.clock() - self._last_flush >= self.flush_interval_s:
            self.flush()

    def before_checkpoint_publish(self, step: int) -> None:
        self.flush()  # raises AttemptFenced when a newer attempt owns the run directory

    def on_checkpoint(self, step: int, path: Path) -> None:
        self._progress["last_checkpoint_step"] = step
        self.flush()

    def on_status(self, message: str, details: dict[str, Any] | None = None) -> None:
        print(f"[mmae] {message}", flush=True)
        if message.lower().startswith("evaluat"):
            self._progress["phase"] = "evaluating"
        self.flush()

    def on_train_end(self, result: TrainResult) -> None:
        phase = "stopped" if result.stopped_early else "done"
        self._progress.update(phase=phase, summary=json_finite(result.summary))
        self.flush()

    def flush(self) -> None:
        """Write buffered points and progress to SQL in one fenced transaction; then send new points to
        MLflow. Raises ``AttemptFenced`` (having written nothing) when the attempt is no longer current."""
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            upsert_points(connection, self.job_id, self.attempt_id, now, self._buffer)
            upsert_progress(
                connection,
                {"attempt_id": self.attempt_id, "job_id": self.job_id, "heartbeat_at": now, **self._progress},
            )
            check_current(connection, self.job_id, self.attempt_id)
        points, self._buffer = self._buffer, {}
        self._last_flush = self.clock()
        if self.tracker is None:
            self._attach()  # a run found now is backfilled from SQL, these points included
        else:
            stamp = int(now.timestamp() * 1000)
            self._mlflow_pending += [
                (name, step, value, stamp)
                for (name, step), value in points.items() if step > self._mlflow_mark.get(name, -1)
            ]
        self._send_pending()

    def _send_pending(self) -> None:
        """Send the queued points to MLflow if the attempt is still current (it may have been ended
        since its last commit); a fenced attempt raises instead of sending."""
        if self.tracker is not None and self._mlflow_pending:
            self.check_current()
            self._try_mlflow(self.tracker.log_points, self._mlflow_pending)

    def check_current(self) -> None:
        """Raise ``AttemptFenced`` unless this attempt is still its job's current one."""
        with self.engine.begin() as connection:
            check_current(connection, self.job_id, self.attempt_id)

    def _attach(self) -> None:
        """Start sending to the job's run if ``find_tracker`` knows it: first what SQL has and MLflow
        lacks, and the run's tags. An unreachable tracking server leaves it for the next flush."""
        tracker = self.find_tracker() if self.find_tracker is not None else None
        if tracker is None:
            return
        try:
            self._mlflow_mark = self._backfill_mlflow(tracker)
        except Exception as error:  # any tracking-server failure
            log.warning("MLflow unreachable (will retry): %s", error)
            return
        self.tracker = tracker
        if self._tags:
            self._try_mlflow(tracker.set_tags, self._tags)

    def _backfill_mlflow(self, tracker: RunTracker) -> dict[str, int]:
        """Queue SQL's points that MLflow lacks (a crash between the two writes); return SQL's marks."""
        marks = sql_high_water(self.engine, self.job_id)
        if not marks:
            return {}
        sent = tracker.high_water(marks)
        stamp = int(time.time() * 1000)
        for name, (steps, values) in read_series(self.engine, self.job_id, after=sent).items():
            points = zip(steps, values, strict=True)
            self._mlflow_pending += [(name, step, value, stamp) for step, value in points]
        return marks

    def _try_mlflow(self, send: Callable[[Any], None], payload: Any) -> None:
        """MLflow is a secondary sink: a failure is logged, never fatal (unsent points wait for a flush)."""
        try:
            send(payload)
        except Exception as error:  # any tracking-server failure
            log.warning("MLflow write failed (will retry): %s", error)
