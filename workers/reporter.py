"""The reporter callback: batched metric points and attempt progress into SQL, then MLflow.

Points are buffered and flushed every ``flush_points`` points or ``flush_interval_s`` seconds, at
every checkpoint, on status changes and at the end, by background threads: the training thread waits
only for the final flush, for the fence before a checkpoint is published, and when its bounded buffer
is full (see ``Reporter``). A flush upserts ``metric_points`` on
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
import importlib
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

from mmae.callbacks import Callback, RunInfo, TrainResult
from workers.background import Flusher
from workers.credentials import DATABASE_URL_ENV, with_node_password
from workers.fence import check_current
from workers.tables import attempt_progress, json_finite, metric_points
from workers.tracking import RunTracker, Series

log = logging.getLogger(__name__)


def connect(database_url: str) -> Engine:
    """Engine for the worker's short writes to the spec's ``database_url`` (its password from the node,
    ``workers.credentials``; SQLite waits up to 30 s for the writer lock). Up to four threads use it at
    once: the lifeline, the reporter's SQL writer and MLflow sender, the training thread (the fence)."""
    database_url = with_node_password(database_url, DATABASE_URL_ENV)
    if database_url.startswith("sqlite"):
        return create_engine(database_url, connect_args={"timeout": 30})
    return create_engine(database_url, pool_pre_ping=True, pool_size=2, max_overflow=2)


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
            {
                "job_id": job_id,
                "attempt_id": attempt_id,
                "logged_at": logged_at,
                "names": list(names),
                "steps": list(steps),
                "values": list(points.values()),
            },
        )
        return
    statement = dialect_module(connection).insert(metric_points)
    rows = [
        {"job_id": job_id, "name": name, "step": step, "value": value, "attempt_id": attempt_id, "logged_at": logged_at}
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
    from sqlalchemy.dialects import postgresql

    points = (
        func.unnest(
            bindparam("names", type_=postgresql.ARRAY(String)),
            bindparam("steps", type_=postgresql.ARRAY(BigInteger)),
            bindparam("values", type_=postgresql.ARRAY(Double)),
        )
        .table_valued("name", "step", "value")
        .render_derived(name="point")
    )
    source = select(
        bindparam("job_id", type_=Integer),
        points.c.name,
        points.c.step,
        points.c.value,
        bindparam("attempt_id", type_=Integer),
        bindparam("logged_at", type_=DateTime(timezone=True)),
    )
    columns = ["job_id", "name", "step", "value", "attempt_id", "logged_at"]
    return _overwriting(postgresql.insert(metric_points).from_select(columns, source))


def upsert_progress(connection: Connection, row: dict[str, Any]) -> None:
    """Insert or replace the ``attempt_progress`` row of ``row["attempt_id"]``."""
    statement = dialect_module(connection).insert(attempt_progress).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=["attempt_id"],
        set_={key: statement.excluded[key] for key in row if key != "attempt_id"},
    )
    connection.execute(statement)


def dialect_module(connection: Connection) -> Any:
    """``sqlalchemy.dialects.sqlite`` or ``.postgresql`` (for their upserts), whichever ``connection`` speaks:
    imported on first use, so a worker on SQLite never loads PostgreSQL's dialect (and asyncio with it)."""
    return importlib.import_module(f"sqlalchemy.dialects.{connection.dialect.name}")


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

    The training thread only buffers. Two daemon threads (``workers.background``) write: the SQL writer
    commits fenced batches, and the MLflow sender re-checks the fence and sends what SQL committed, so a
    slow MLflow never holds up SQL. The training thread waits for them only in ``flush`` (the end of the
    run: both), before a checkpoint is published (SQL only, for the fence), and when
    ``max_buffered_points`` points are waiting for SQL: then it blocks until the writer takes them (points
    are never dropped). A failure of either thread (``AttemptFenced`` included) is raised on the training
    thread at its next report. A stopped run (cancel, preemption: a grace period is running) waits for
    SQL only; the service's MLflow thread sends the run whatever SQL has and it lacks when it closes it.

    ``find_tracker`` returns the job's MLflow run once it is known (the service creates it just after
    submitting the attempt); the MLflow sender asks it until it answers, then backfills what SQL has and
    MLflow lacks. An MLflow failure is retried after ``mlflow_retry_s`` (at once at the end of the run);
    unsent points stay queued up to ``max_mlflow_pending``, past which the queue is dropped and the run
    attached again later, backfilling them from SQL.
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
        max_buffered_points: int = 100_000,
        max_mlflow_pending: int = 200_000,
        mlflow_retry_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.job_id, self.attempt_id, self.find_tracker = engine, job_id, attempt_id, find_tracker
        self.flush_points, self.flush_interval_s, self.clock = flush_points, flush_interval_s, clock
        self.max_buffered_points = max(max_buffered_points, flush_points)
        self.max_mlflow_pending, self.mlflow_retry_s = max_mlflow_pending, mlflow_retry_s
        self.tracker: RunTracker | None = None
        self._sql = Flusher(f"mmae-sql-{attempt_id}", self._write_sql)
        self._mlflow = Flusher(f"mmae-mlflow-{attempt_id}", self._send_pending)
        # guarded by self._sql.cond: the training thread's buffer and progress row
        self._buffer: dict[tuple[str, int], float] = {}
        self._progress: dict[str, Any] = {"step": 0, "total_steps": 0, "phase": "starting"}
        self._last_ask = clock()
        # guarded by self._mlflow.cond: what MLflow is still to get
        self._mlflow_pending: list[tuple[str, int, float, int]] = []
        self._mlflow_mark: dict[str, int] = {}
        self._reattach = False
        self._tags: dict[str, str] = {}
        # the MLflow sender's own
        self._mlflow_retry_at = -math.inf
        self._final = False
        self._dropped: set[str] = set()  # the training thread's
        self._mlflow.ask()  # look for the job's run (importing MLflow) while fit builds the data and model

    def on_train_start(self, info: RunInfo) -> None:
        with self._sql.cond:
            self._progress.update(step=info.start_step, total_steps=info.total_steps, phase="training")
            self._progress["run_info"] = json_finite(dataclasses.asdict(info))
        with self._mlflow.cond:
            self._tags = dict(info.tags)
        self._ask_sql()

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        with self._sql.cond:
            for name, value in metrics.items():
                if math.isfinite(value):
                    self._buffer[(name, step)] = float(value)
                elif name not in self._dropped:
                    self._dropped.add(name)
                    log.warning("dropping non-finite %s=%s at step %d (and later ones)", name, value, step)
            self._progress["step"] = max(self._progress["step"], step)
            if len(self._buffer) >= self.max_buffered_points:  # SQL is behind: wait for the writer to take them
                self._sql.ask()
                self._sql.cond.wait_for(lambda: len(self._buffer) < self.max_buffered_points or self._sql.failed)
            due = len(self._buffer) >= self.flush_points or self.clock() - self._last_ask >= self.flush_interval_s
        if due:
            self._ask_sql()
        else:
            self._raise_failure()

    def before_checkpoint_publish(self, step: int) -> None:
        self._sql.wait(self._ask_sql())  # raises AttemptFenced when a newer attempt owns the run directory

    def on_checkpoint(self, step: int, path: Path) -> None:
        with self._sql.cond:
            self._progress["last_checkpoint_step"] = step
        self._ask_sql()

    def on_status(self, message: str, details: dict[str, Any] | None = None) -> None:
        print(f"[mmae] {message}", flush=True)
        with self._sql.cond:
            if message.lower().startswith("evaluat"):
                self._progress["phase"] = "evaluating"
        self._ask_sql()

    def on_train_end(self, result: TrainResult) -> None:
        phase = "stopped" if result.stopped_early else "done"
        with self._sql.cond:
            self._progress.update(phase=phase, summary=json_finite(result.summary))
        self._final = True
        if result.stopped_early:
            self._sql.wait(self._ask_sql())
            self._sql.close()
            return
        self.flush()
        self._sql.close()
        self._mlflow.close()

    def flush(self) -> None:
        """Write buffered points and progress to SQL in one fenced transaction, then send new points to
        MLflow, and wait for both. Raises ``AttemptFenced`` (having written nothing) when the attempt is no
        longer current."""
        self._sql.wait(self._ask_sql())
        self._mlflow.wait(self._mlflow.ask())

    def check_current(self) -> None:
        """Raise ``AttemptFenced`` unless this attempt is still its job's current one."""
        with self.engine.begin() as connection:
            check_current(connection, self.job_id, self.attempt_id)

    def _raise_failure(self) -> None:
        self._sql.raise_failure()
        self._mlflow.raise_failure()

    def _ask_sql(self) -> int:
        self._mlflow.raise_failure()
        with self._sql.cond:
            self._last_ask = self.clock()
            return self._sql.ask()

    def _write_sql(self) -> None:
        """(SQL writer thread) Commit the buffer and the progress row in one fenced transaction, then queue
        the points for MLflow (steps at or below SQL's mark when the run was attached are not re-sent)."""
        with self._sql.cond:
            points, self._buffer = self._buffer, {}
            progress = dict(self._progress)
            self._sql.cond.notify_all()
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            upsert_points(connection, self.job_id, self.attempt_id, now, points)
            upsert_progress(
                connection, {"attempt_id": self.attempt_id, "job_id": self.job_id, "heartbeat_at": now, **progress}
            )
            check_current(connection, self.job_id, self.attempt_id)
        stamp = int(now.timestamp() * 1000)
        with self._mlflow.cond:
            self._mlflow_pending += [
                (name, step, value, stamp)
                for (name, step), value in points.items()
                if step > self._mlflow_mark.get(name, -1)
            ]
            if len(self._mlflow_pending) > self.max_mlflow_pending:  # SQL has them: a later attach backfills
                self._mlflow_pending, self._reattach = [], True
        self._mlflow.ask()

    def _send_pending(self) -> None:
        """(MLflow sender thread) Find the job's run if not yet attached, then send the queued points if
        the attempt is still current (it may have been ended since its last commit); a fenced attempt
        raises instead of sending. Waits out ``mlflow_retry_s`` after a failure, except at the end."""
        if not self._final and self.clock() < self._mlflow_retry_at:
            return
        with self._mlflow.cond:
            if self._reattach:
                self.tracker, self._reattach = None, False
        if self.tracker is None:
            self._attach()
        if self.tracker is not None and self._mlflow_pending:
            self.check_current()
            self._try_mlflow(self.tracker.log_points, self._mlflow_pending)

    def _attach(self) -> None:
        """Start sending to the job's run if ``find_tracker`` knows it: first what SQL has and MLflow
        lacks, and the run's tags. An unreachable tracking server leaves it for a later try."""
        tracker = self.find_tracker() if self.find_tracker is not None else None
        if tracker is None:
            return
        try:
            marks = sql_high_water(self.engine, self.job_id)
            backfill = self._backfill(tracker, marks)
        except Exception as error:  # any tracking-server failure
            log.warning("MLflow unreachable (will retry): %s", error)
            self._mlflow_retry_at = self.clock() + self.mlflow_retry_s
            return
        with self._mlflow.cond:  # points committed since ``marks`` were read stay queued; older ones are in backfill
            queued = [point for point in self._mlflow_pending if point[1] > marks.get(point[0], -1)]
            self._mlflow_pending = backfill + queued
            self._mlflow_mark, self.tracker, tags = marks, tracker, dict(self._tags)
        if tags:
            self._try_mlflow(tracker.set_tags, tags)

    def _backfill(self, tracker: RunTracker, marks: dict[str, int]) -> list[tuple[str, int, float, int]]:
        """SQL's points up to ``marks`` that MLflow lacks (a crash between the two writes, a run found late)."""
        if not marks:
            return []
        sent = tracker.high_water(marks)
        stamp = int(time.time() * 1000)
        return [
            (name, step, value, stamp)
            for name, (steps, values) in read_series(self.engine, self.job_id, after=sent).items()
            for step, value in zip(steps, values, strict=True)
            if step <= marks.get(name, -1)
        ]

    def _try_mlflow(self, send: Callable[[Any], None], payload: Any) -> None:
        """MLflow is a secondary sink: a failure is logged, never fatal (unsent points wait for a retry)."""
        try:
            send(payload)
        except Exception as error:  # any tracking-server failure
            log.warning("MLflow write failed (will retry in %.0f s): %s", self.mlflow_retry_s, error)
            self._mlflow_retry_at = self.clock() + self.mlflow_retry_s
