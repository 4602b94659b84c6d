"""The scheduler lease: one process per database runs the scheduler loop; another takes over when the
holder stops or dies. Two engines on one database stand for two API processes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from service.scheduling.leader import FileLease, Lease, PostgresLease, SchedulerLeader, lease_for
from service.store.db import make_engine

RETRY_S = 0.05


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def engines(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Engine]]:
    """Two engines on one fresh database."""
    if request.param == "postgresql":
        url = request.getfixturevalue("own_postgres_url")
    else:
        url = f"sqlite:///{tmp_path / 'mmae.db'}"
    pair = make_engine(url), make_engine(url)
    yield pair
    for engine in pair:
        engine.dispose()


def end_advisory_lock_sessions(engine: Engine) -> None:
    """End every session that holds an advisory lock on the database (as if its process died)."""
    with engine.connect() as connection:
        connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )
        )
        connection.commit()


def leases(engines: tuple[Engine, Engine], tmp_path: Path) -> tuple[Lease, Lease]:
    return lease_for(engines[0], tmp_path), lease_for(engines[1], tmp_path)


def test_one_holder_at_a_time_and_the_next_takes_over_on_release(
    engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    first, second = leases(engines, tmp_path)
    assert isinstance(first, PostgresLease if engines[0].dialect.name == "postgresql" else FileLease)
    assert first.try_acquire() and first.try_acquire(), "holding it, asking again is a yes"
    assert not second.try_acquire()
    assert first.held() and not second.held()
    first.release()
    assert not first.held()
    assert second.try_acquire()
    assert not first.try_acquire()
    second.release()


@pytest.mark.postgres
def test_a_holder_whose_session_dies_loses_the_lease_to_the_next(own_postgres_url: str) -> None:
    engines = [make_engine(own_postgres_url) for _ in range(3)]
    try:
        holder, successor = PostgresLease(engines[0]), PostgresLease(engines[1])
        assert holder.try_acquire() and not successor.try_acquire()
        end_advisory_lock_sessions(engines[2])
        assert not holder.held()
        assert successor.try_acquire()
        successor.release()
    finally:
        for engine in engines:
            engine.dispose()


class StandInLoop:
    """What a leader drives of a SchedulerLoop: ``run`` until ``stop``, and ``wake``."""

    def __init__(self) -> None:
        self.stopped = asyncio.Event()
        self.wakes = 0

    async def run(self) -> None:
        await self.stopped.wait()

    def stop(self) -> None:
        self.stopped.set()

    def wake(self) -> None:
        self.wakes += 1


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def test_exactly_one_leader_runs_the_loop_and_the_other_takes_over_when_it_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "mmae.db.scheduler-lock"
        first = SchedulerLeader(StandInLoop, FileLease(path), RETRY_S)
        second = SchedulerLeader(StandInLoop, FileLease(path), RETRY_S)
        tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
        await until(lambda: first.leading or second.leading)
        leader, follower = (first, second) if first.leading else (second, first)
        await asyncio.sleep(5 * RETRY_S)
        assert leader.leading and not follower.leading, "never two loops on one database"
        follower.wake()  # a job queued on the follower waits for the leader's next pass
        leader.wake()
        assert leader.loop.wakes == 1
        leader.stop()
        await until(lambda: follower.leading)
        follower.stop()
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        assert not first.leading and not second.leading

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_leader_that_loses_its_lease_stops_its_loop_and_leads_again_when_it_can(own_postgres_url: str) -> None:
    async def scenario() -> None:
        engine, admin = make_engine(own_postgres_url), make_engine(own_postgres_url)
        leader = SchedulerLeader(StandInLoop, PostgresLease(engine), RETRY_S)
        task = asyncio.create_task(leader.run())
        try:
            await until(lambda: leader.leading)
            first_loop = leader.loop
            await asyncio.to_thread(end_advisory_lock_sessions, admin)
            await until(lambda: first_loop.stopped.is_set())
            await until(lambda: leader.leading and leader.loop is not first_loop)
        finally:
            leader.stop()
            await asyncio.wait_for(task, 5)
            engine.dispose()
            admin.dispose()

    asyncio.run(scenario())


@pytest.mark.postgres
def test_a_job_queued_through_a_process_that_does_not_lead_wakes_the_leader_at_once(
    own_postgres_url: str,
) -> None:
    async def scenario() -> None:
        engines = [make_engine(own_postgres_url) for _ in range(2)]
        slow_retry_s = 30.0  # so only the notice, not a retry or a poll, can wake the leader in time
        leader = SchedulerLeader(StandInLoop, PostgresLease(engines[0]), slow_retry_s)
        follower = SchedulerLeader(StandInLoop, PostgresLease(engines[1]), slow_retry_s)  # an API-only process
        task = asyncio.create_task(leader.run())
        try:
            await until(lambda: leader.leading)
            await asyncio.to_thread(follower.wake)
            await until(lambda: leader.loop.wakes == 1, timeout_s=2.0)
        finally:
            leader.stop()
            await asyncio.wait_for(task, 5)
            for engine in engines:
                engine.dispose()

    asyncio.run(scenario())
