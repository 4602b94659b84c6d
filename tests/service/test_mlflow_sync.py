"""The MLflow sync makes MLflow agree with the database, whatever it missed: it opens the run of a job
that ran while MLflow was down, back-fills its metric points from SQL once, closes it with the job's
status, re-opens a retried job's run, and closes a sweep's parent run (with its report) once every cell
ended. A tracking server that never answers fails a pass within the short timeout, and the scheduler
loop stops at once meanwhile (issue 10, finding 3)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, update
from sqlalchemy.orm import Session, sessionmaker

from mmae.config import TrainConfig, config_hash
from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import SchedulerLoop
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.migrations import upgrade_to_head
from service.store.models import Job, MetricPoint, Sweep
from service.store.states import JobStatus
from service.tracking.mlflow_sync import sync_pass
from service.tracking.tracker import Tracker
from tests.service.test_ray_submit_retry import FlakyRay, client_of

STEPS = 25


@pytest.fixture
def factory(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'mmae.db'}")
    upgrade_to_head(engine)
    yield make_session_factory(engine)
    engine.dispose()


@pytest.fixture
def tracker(tmp_path: Path, mlflow_store: str, request: pytest.FixtureRequest) -> Tracker:
    return Tracker(Settings(data_dir=tmp_path, mlflow_tracking_uri=mlflow_store, mlflow_experiment=request.node.name))


def ran(factory: sessionmaker[Session], status: JobStatus, sweep_id: int | None = None, **fields: Any) -> int:
    """A job that ran (with ``STEPS`` train/loss points in SQL) and is now ``status``, no MLflow run."""
    config = TrainConfig.model_validate({"steps": STEPS, "seed": fields.pop("seed", 0)})
    now = datetime.now(UTC)
    with factory() as session:
        job = Job(
            name="ran",
            method=config.method,
            config=config.model_dump(mode="json"),
            config_hash=config_hash(config),
            status=status,
            started_at=now,
            sweep_id=sweep_id,
            run_dir_name=f"job-{now.timestamp()}-{config.seed}",
            **fields,
        )
        session.add(job)
        session.flush()
        session.execute(
            insert(MetricPoint),
            [
                {
                    "job_id": job.id,
                    "name": "train/loss",
                    "step": step,
                    "value": 1.0 / step,
                    "attempt_id": 0,
                    "logged_at": now,
                }
                for step in range(1, STEPS + 1)
            ],
        )
        session.commit()
        return job.id


def run_of(factory: sessionmaker[Session], job_id: int) -> str | None:
    with factory() as session:
        return session.get(Job, job_id).mlflow_run_id


@pytest.mark.slow
def test_a_job_that_ran_while_mlflow_was_down_gets_its_run_back_filled_once(factory, tracker) -> None:
    job_id = ran(factory, JobStatus.SUCCEEDED)
    sync_pass(factory, tracker)
    run_id = run_of(factory, job_id)
    run = tracker.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["steps"] == str(STEPS)
    assert run.data.tags["mmae.job_id"] == str(job_id)
    sync_pass(factory, tracker)  # nothing left to do: no second run, no point sent twice
    history = tracker.client.get_metric_history(run_id, "train/loss")
    assert sorted(point.step for point in history) == list(range(1, STEPS + 1))
    assert len(tracker.client.search_runs([tracker.experiment_id()])) == 1


def test_a_retried_job_reopens_its_run_and_a_failed_one_closes_it_failed(factory, tracker) -> None:
    job_id = ran(factory, JobStatus.CANCELLED)
    sync_pass(factory, tracker)
    run_id = run_of(factory, job_id)
    assert tracker.client.get_run(run_id).info.status == "KILLED"
    with factory() as session:  # a user retry, and the job runs again
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.RUNNING))
        session.commit()
    sync_pass(factory, tracker)
    assert tracker.client.get_run(run_id).info.status == "RUNNING"
    with factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=JobStatus.FAILED))
        session.commit()
    sync_pass(factory, tracker)
    assert tracker.client.get_run(run_id).info.status == "FAILED"


def test_a_sweep_parent_run_closes_with_its_report_once_every_cell_ended(factory, tracker) -> None:
    with factory() as session:
        sweep = Sweep(name="mu", strategy="grid", parameters={"seed": {"values": [0, 1]}}, base_config={})
        session.add(sweep)
        session.commit()
        sweep_id = sweep.id
    done = ran(factory, JobStatus.SUCCEEDED, sweep_id, seed=0)
    running = ran(factory, JobStatus.RUNNING, sweep_id, seed=1)
    sync_pass(factory, tracker)
    with factory() as session:
        parent = session.get(Sweep, sweep_id).mlflow_parent_run_id
    for job_id in (done, running):
        assert tracker.client.get_run(run_of(factory, job_id)).data.tags["mlflow.parentRunId"] == parent
    assert tracker.client.get_run(parent).info.status == "RUNNING", "a cell still runs"
    with factory() as session:
        session.execute(update(Job).where(Job.id == running).values(status=JobStatus.SUCCEEDED))
        session.commit()
    sync_pass(factory, tracker)
    assert tracker.client.get_run(parent).info.status == "FINISHED"
    assert [item.path for item in tracker.client.list_artifacts(parent)] == ["report.html"]


@pytest.fixture
def silent_tracker(tmp_path: Path) -> Iterator[Tracker]:
    """A tracker whose server accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield Tracker(Settings(data_dir=tmp_path, mlflow_tracking_uri=f"http://127.0.0.1:{listener.getsockname()[1]}"))


@pytest.mark.slow
def test_a_silent_tracking_server_fails_a_pass_within_the_timeout(factory, silent_tracker) -> None:
    started = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 (whatever MLflow's client raises on a read timeout)
        sync_pass(factory, silent_tracker)
    assert time.monotonic() - started < 15, "one 5 s timeout, no retries (MLflow's defaults took 247 s)"


def test_the_scheduler_loop_stops_at_once_while_mlflow_hangs(factory, silent_tracker, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, ray_address="http://ray.invalid:8265")
    loop = SchedulerLoop(SchedulerContext(client_of(FlakyRay([])), settings, silent_tracker), factory)

    async def run_then_stop() -> float:
        task = asyncio.create_task(loop.run())
        await asyncio.sleep(1.0)  # the sync thread is now inside a call that does not return for 5 s
        started = time.monotonic()
        loop.stop()
        await asyncio.wait_for(task, 5)
        return time.monotonic() - started

    assert asyncio.run(run_then_stop()) < 2
    assert loop.mlflow.failures == 0, "the pass in flight had not failed yet: stopping did not wait for it"
