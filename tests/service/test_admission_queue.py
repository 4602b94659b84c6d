"""Admission reads the queue a page at a time, in priority-then-FIFO order across pages and priority
levels, and stops once nothing more could fit; a job that can never fit fails wherever it waits
(issue 10, finding 6). Ray is the in-memory ``fake_ray.FakeRay`` (one 4-CPU node)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, insert, select

from mmae.config import TrainConfig, config_hash
from service.scheduling import scheduler
from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import admit_queued
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.migrations import upgrade_to_head
from service.store.models import Job
from service.store.states import JobStatus
from service.tracking.tracker import Tracker
from tests.service.fake_ray import FakeRay


@pytest.fixture
def engine(migrated_url: str) -> Iterator[Engine]:
    engine = make_engine(migrated_url)
    upgrade_to_head(engine)
    yield engine
    engine.dispose()


def context_of(engine: Engine, tmp_path: Path) -> SchedulerContext:
    settings = Settings(data_dir=tmp_path, database_url=str(engine.url))
    return SchedulerContext(FakeRay(), settings, Tracker(settings))


def queue(engine: Engine, jobs: list[dict]) -> list[int]:
    """Insert queued 1-CPU jobs (fields per job override), queued 1 µs apart in list order."""
    config = TrainConfig.model_validate({"steps": 10})
    base = {
        "method": "mmae",
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "num_cpus": 1.0,
        "num_gpus": 0.0,
        "workers": 1,
        "status": JobStatus.QUEUED,
        "priority": 0,
    }
    now = datetime.now(UTC)
    rows = [base | {"name": f"j{i}", "queued_at": now + timedelta(microseconds=i)} | job for i, job in enumerate(jobs)]
    with engine.begin() as connection:
        return list(connection.scalars(insert(Job).returning(Job.id), rows))


def test_a_pass_takes_priority_then_fifo_across_pages_and_reads_only_what_it_needs(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "ADMIT_PAGE", 2)
    ids = queue(engine, [{"priority": 0}] * 500 + [{"priority": 1}] * 3 + [{"priority": 5}] * 2)
    low, middle, high = ids[:500], ids[500:503], ids[503:]
    pages: list[str] = []
    loaded: list[int] = []

    def count_page(_connection, _cursor, statement: str, *_args) -> None:
        if "LIMIT" in statement and "FROM jobs" in statement:
            pages.append(statement)

    def count_load(job: Job, _context) -> None:
        loaded.append(job.id)

    event.listen(engine, "before_cursor_execute", count_page)
    event.listen(Job, "load", count_load)
    context = context_of(engine, tmp_path)
    try:
        with make_session_factory(engine)() as session:  # a 4-CPU node: two priority levels, then one more job
            started = admit_queued(session, context)
    finally:
        event.remove(Job, "load", count_load)
    assert started == high + middle[:2], "priority first, FIFO within it, in keyset pages of 2"
    assert sorted(set(loaded)) == sorted(started), "whole rows only for the jobs that started"
    assert len(pages) <= 5, f"stopped once the cluster was full, not after {len(pages)} pages of 505 jobs"
    with engine.connect() as connection:
        statuses = dict(connection.execute(select(Job.id, Job.status)).all())
    assert {statuses[i] for i in low + middle[2:]} == {JobStatus.QUEUED}


def test_a_job_that_can_never_fit_fails_wherever_it_waits(engine: Engine, tmp_path: Path) -> None:
    ids = queue(engine, [{}] * 200 + [{"num_cpus": 64.0}])
    with make_session_factory(engine)() as session:
        assert len(admit_queued(session, context_of(engine, tmp_path))) == 4
        too_big = session.get(Job, ids[-1])
        assert too_big.status == JobStatus.FAILED and "can never fit" in too_big.error
