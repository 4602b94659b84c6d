"""The reporter on real databases (SQLite and PostgreSQL) and a real MLflow store: a retried or
resumed attempt never loses or doubles a point, in SQL or in MLflow, and an attempt that is no longer
its job's current one writes nothing anywhere."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient
from sqlalchemy import Engine, select

from mmae.callbacks import RunInfo, TrainResult
from workers.fence import AttemptFenced
from workers.reporter import Reporter, connect
from workers.tables import attempt_progress, metric_points
from workers.tracking import RunTracker

if TYPE_CHECKING:
    from conftest import AttemptRows

JOB = 7


@pytest.fixture
def mlflow_uri(mlflow_store: str) -> str:
    return mlflow_store


@pytest.fixture
def run_id(mlflow_uri: str, tmp_path: Path) -> str:
    client = MlflowClient(mlflow_uri)
    experiment = client.create_experiment(f"reporter-{tmp_path.name}", artifact_location=tmp_path.as_uri())
    return client.create_run(experiment).info.run_id


@pytest.fixture
def engine(migrated_url: str) -> Engine:
    return connect(migrated_url)


@pytest.fixture
def rows(engine: Engine, attempt_rows: type[AttemptRows]) -> AttemptRows:
    """Job ``JOB`` with attempt 1 running."""
    rows = attempt_rows(engine, JOB)
    rows.start(1)
    return rows


def info(start_step: int, total: int = 20) -> RunInfo:
    return RunInfo(total, start_step, 16, 1000, "cpu", "fp32", {"mu_convention": "paper"})


def emit(reporter: Reporter, steps: range, scale: float) -> None:
    for step in steps:
        reporter.on_metrics(step, {"train/loss": scale * step})
        if step % 5 == 0:
            reporter.on_metrics(step, {"info/erank": float(step)})


def sql_points(engine: Engine, name: str) -> list[tuple[int, float, int]]:
    query = (
        select(metric_points.c.step, metric_points.c.value, metric_points.c.attempt_id)
        .where(metric_points.c.job_id == JOB, metric_points.c.name == name)
        .order_by(metric_points.c.step)
    )
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(query)]


def mlflow_steps(uri: str, run_id: str, name: str) -> list[int]:
    return sorted(metric.step for metric in MlflowClient(uri).get_metric_history(run_id, name))


def test_resumed_attempt_overwrites_sql_and_never_resends_to_mlflow(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    first = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    first.on_train_start(info(0))
    emit(first, range(1, 13), scale=1.0)
    first.on_checkpoint(10, Path("last.pt"))
    first.flush()  # then the worker dies: steps 11 and 12 were reported past the checkpoint
    rows.end(1)
    rows.start(2)

    second = Reporter(engine, job_id=JOB, attempt_id=2, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    second.on_train_start(info(10))
    emit(second, range(11, 21), scale=10.0)
    second.on_train_end(TrainResult(20, False, {"train/loss": 200.0}, None))

    points = sql_points(engine, "train/loss")
    assert [step for step, _, _ in points] == list(range(1, 21))
    assert points[10] == (11, 110.0, 2)  # the resumed attempt's value replaced the first one's
    assert points[9] == (10, 10.0, 1)
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 21))
    assert mlflow_steps(mlflow_uri, run_id, "info/erank") == [5, 10, 15, 20]
    with engine.connect() as connection:
        query = select(attempt_progress).where(attempt_progress.c.attempt_id == 2)
        progress = connection.execute(query).one()
    assert (progress.step, progress.total_steps, progress.phase) == (20, 20, "done")
    assert progress.last_checkpoint_step is None and progress.summary == {"train/loss": 200.0}
    assert progress.run_info["start_step"] == 10
    tags = MlflowClient(mlflow_uri).get_run(run_id).data.tags
    assert tags["mu_convention"] == "paper"


def test_points_in_sql_but_not_in_mlflow_are_backfilled_once(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    first = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    first.on_train_start(info(0))
    emit(first, range(1, 5), scale=1.0)
    first.flush()
    first.tracker = first.find_tracker = None  # the worker dies between its SQL commit and its MLflow send
    emit(first, range(5, 9), scale=1.0)
    first.flush()
    rows.end(1)
    rows.start(2)

    second = Reporter(engine, job_id=JOB, attempt_id=2, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    second.on_train_start(info(5))
    emit(second, range(6, 11), scale=1.0)
    second.flush()

    assert [step for step, _, _ in sql_points(engine, "train/loss")] == list(range(1, 11))
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 11))
    assert mlflow_steps(mlflow_uri, run_id, "info/erank") == [5, 10]


def test_a_run_the_service_creates_late_gets_every_point_once(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    known: list[RunTracker] = []  # the spec names no run until the service has created it
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: known[0] if known else None)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 6), scale=1.0)
    reporter.flush()
    assert reporter.tracker is None
    known.append(RunTracker(mlflow_uri, run_id))
    emit(reporter, range(6, 11), scale=1.0)
    reporter.flush()  # finds the run: backfills steps 1..5 from SQL, with 6..10
    emit(reporter, range(11, 13), scale=1.0)
    reporter.on_train_end(TrainResult(12, False, {"train/loss": 12.0}, None))

    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 13))
    assert mlflow_steps(mlflow_uri, run_id, "info/erank") == [5, 10]
    assert MlflowClient(mlflow_uri).get_run(run_id).data.tags["mu_convention"] == "paper"


def test_non_finite_numbers_in_progress_json_are_stored_as_null(engine: Engine, rows: AttemptRows) -> None:
    reporter = Reporter(engine, job_id=JOB, attempt_id=1)
    reporter.on_train_start(info(0))
    summary = {"eval/linear_top1": 0.5, "train/loss": float("nan"), "info/erank": float("inf")}
    reporter.on_train_end(TrainResult(20, False, summary, None))
    with engine.connect() as connection:
        progress = connection.execute(select(attempt_progress)).one()
    assert progress.summary == {"eval/linear_top1": 0.5, "train/loss": None, "info/erank": None}
    assert progress.run_info["feature_dim"] == 16


def written_batches(engine: Engine, name: str) -> list[list[int]]:
    """The steps of ``name`` in SQL, grouped by the flush that wrote them (one ``logged_at`` per flush)."""
    query = select(metric_points.c.step, metric_points.c.logged_at).where(metric_points.c.name == name)
    batches: dict[object, list[int]] = {}
    with engine.connect() as connection:
        for step, logged_at in connection.execute(query.order_by(metric_points.c.step)):
            batches.setdefault(logged_at, []).append(step)
    return list(batches.values())


def wait_until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "the background writer did not write in time"
        time.sleep(0.01)


def test_points_are_batched_until_a_threshold_or_interval(engine: Engine, rows: AttemptRows) -> None:
    now = [0.0]
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, flush_points=10, flush_interval_s=5.0, clock=lambda: now[0])
    reporter.on_train_start(info(0))
    reporter.flush()  # the start's own flush (progress) is done before any point is buffered
    emit(reporter, range(1, 9), scale=1.0)  # 8 + 1 points: under both limits
    emit(reporter, range(9, 10), scale=1.0)  # the 10th point flushes, on the writer's thread
    wait_until(lambda: len(sql_points(engine, "train/loss")) == 9)
    assert written_batches(engine, "train/loss") == [list(range(1, 10))]  # in one batch
    reporter.on_metrics(10, {"train/loss": 1.0, "train/lr": float("nan")})
    now[0] = 6.0
    reporter.on_metrics(11, {"train/loss": 1.0})  # the interval flushes
    wait_until(lambda: len(sql_points(engine, "train/loss")) == 11)
    assert written_batches(engine, "train/loss")[-1] == [10, 11]
    assert sql_points(engine, "train/lr") == []  # non-finite values are dropped, not stored as NULL
    reporter.on_train_end(TrainResult(11, False, {}, None))


def stored(engine: Engine) -> tuple[list, list]:
    with engine.connect() as connection:
        points = connection.execute(select(metric_points).order_by(metric_points.c.name, metric_points.c.step))
        progress = connection.execute(select(attempt_progress).order_by(attempt_progress.c.attempt_id))
        return [tuple(row) for row in points], [tuple(row) for row in progress]


def test_a_fenced_attempt_writes_nothing_to_sql_or_mlflow(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    stale = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    stale.on_train_start(info(0))
    emit(stale, range(1, 4), scale=1.0)
    stale.flush()
    rows.end(1)  # the service ended attempt 1 (Ray reported it dead) but its trainer lives on
    rows.start(2)
    current = Reporter(engine, job_id=JOB, attempt_id=2, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    current.on_train_start(info(3))
    emit(current, range(4, 7), scale=10.0)
    current.flush()
    before = stored(engine)

    emit(stale, range(4, 9), scale=1.0)
    with pytest.raises(AttemptFenced, match="attempt 1 is no longer the current attempt of job 7"):
        stale.flush()
    with pytest.raises(AttemptFenced):
        stale.before_checkpoint_publish(8)
    assert stored(engine) == before  # neither its points nor its progress row changed
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 7))
    assert [value for step, value, _ in sql_points(engine, "train/loss") if step > 3] == [40.0, 50.0, 60.0]


def test_mlflow_gets_nothing_from_an_attempt_fenced_between_its_commit_and_its_send(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    class EndedAfterCommit(Reporter):
        """The service ends attempt 1 (and starts attempt 2) right after this flush's SQL commit."""

        def _send_pending(self) -> None:
            if ended:
                rows.end(1)
                rows.start(2)
            super()._send_pending()

    ended = False
    stale = EndedAfterCommit(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    stale.on_train_start(info(0))
    emit(stale, range(1, 4), scale=1.0)
    stale.flush()
    emit(stale, range(4, 7), scale=1.0)
    ended = True
    with pytest.raises(AttemptFenced):
        stale.flush()  # steps 4..6 are in SQL (committed while current), not in MLflow
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == [1, 2, 3]

    current = Reporter(engine, job_id=JOB, attempt_id=2, find_tracker=lambda: RunTracker(mlflow_uri, run_id))
    current.on_train_start(info(3))  # backfills what the stale attempt had committed
    emit(current, range(4, 9), scale=10.0)
    current.flush()
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 9))  # every step exactly once


class HeldTracker(RunTracker):
    """A real run whose ``log_points`` first waits for ``release`` (a tracking server that hangs)."""

    def __init__(self, uri: str, run_id: str) -> None:
        super().__init__(uri, run_id)
        self.release, self.sending = threading.Event(), threading.Event()

    def log_points(self, pending: list[tuple[str, int, float, int]]) -> None:
        self.sending.set()
        assert self.release.wait(30)
        super().log_points(pending)


def test_a_hanging_mlflow_holds_up_neither_training_nor_sql(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    tracker = HeldTracker(mlflow_uri, run_id)
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: tracker, flush_points=1)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 3), scale=1.0)
    assert tracker.sending.wait(10)  # MLflow now hangs in log_batch
    emit(reporter, range(3, 21), scale=1.0)  # every point asks for a flush: none of them waits for MLflow
    wait_until(lambda: len(sql_points(engine, "train/loss")) == 20)
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == []
    tracker.release.set()
    reporter.on_train_end(TrainResult(20, False, {}, None))  # the final flush waits for MLflow
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 21))


def test_a_stopped_run_waits_for_sql_only(engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows) -> None:
    """On a cancel the grace period runs: the final flush must not wait on a hanging MLflow (the service's
    MLflow thread back-fills the run from SQL when it closes it)."""
    tracker = HeldTracker(mlflow_uri, run_id)
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: tracker, flush_points=1)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 3), scale=1.0)
    assert tracker.sending.wait(10)  # MLflow now hangs in log_batch
    emit(reporter, range(3, 8), scale=1.0)
    ended = threading.Thread(target=reporter.on_train_end, args=(TrainResult(7, True, {}, None),))
    ended.start()
    ended.join(10)
    try:
        assert not ended.is_alive(), "the stopped run waited for MLflow"
        assert [step for step, _, _ in sql_points(engine, "train/loss")] == list(range(1, 8))
    finally:
        tracker.release.set()


class FlakyTracker(RunTracker):
    """A real run behind a tracking server that refuses the first ``failures`` sends."""

    def __init__(self, uri: str, run_id: str, failures: int) -> None:
        super().__init__(uri, run_id)
        self.failures = failures

    def log_points(self, pending: list[tuple[str, int, float, int]]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("tracking server unreachable")
        super().log_points(pending)


def test_points_mlflow_refused_are_kept_and_sent_once_at_the_end(
    engine: Engine, mlflow_uri: str, run_id: str, rows: AttemptRows
) -> None:
    tracker = FlakyTracker(mlflow_uri, run_id, failures=1)
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, find_tracker=lambda: tracker, mlflow_retry_s=3600)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 6), scale=1.0)
    reporter.flush()  # refused: no retry for an hour
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == []
    emit(reporter, range(6, 11), scale=1.0)
    reporter.flush()  # still waiting out the retry delay: kept
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == []
    reporter.on_train_end(TrainResult(10, False, {}, None))  # the end retries at once
    assert mlflow_steps(mlflow_uri, run_id, "train/loss") == list(range(1, 11))


class HeldWriter(Reporter):
    """A reporter whose SQL writer waits for ``release`` before each flush (a database that is slow)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.release = threading.Event()

    def _write_sql(self) -> None:
        assert self.release.wait(30)
        super()._write_sql()


def test_training_blocks_only_when_the_buffer_is_full_and_loses_no_point(engine: Engine, rows: AttemptRows) -> None:
    reporter = HeldWriter(engine, job_id=JOB, attempt_id=1, flush_points=5, max_buffered_points=20)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 17), scale=1.0)  # 16 + 3 points: under the bound, though none is written
    trainer = threading.Thread(target=emit, args=(reporter, range(17, 41), 1.0))
    trainer.start()
    trainer.join(0.5)
    assert trainer.is_alive(), "the training thread went on past the bound while SQL was stuck"
    reporter.release.set()
    trainer.join(10)
    assert not trainer.is_alive()
    reporter.on_train_end(TrainResult(40, False, {}, None))
    assert [step for step, _, _ in sql_points(engine, "train/loss")] == list(range(1, 41))
    assert [step for step, _, _ in sql_points(engine, "info/erank")] == list(range(5, 41, 5))


def test_a_fence_the_writer_finds_stops_training_at_its_next_report(engine: Engine, rows: AttemptRows) -> None:
    reporter = Reporter(engine, job_id=JOB, attempt_id=1, flush_points=1)
    reporter.on_train_start(info(0))
    emit(reporter, range(1, 3), scale=1.0)
    reporter.flush()
    rows.end(1)
    rows.start(2)
    with pytest.raises(AttemptFenced):  # the writer's flush is fenced; the next report raises it
        for step in range(3, 1000):
            reporter.on_metrics(step, {"train/loss": 1.0})
            time.sleep(0.01)
    assert [step for step, _, _ in sql_points(engine, "train/loss")] == [1, 2]
