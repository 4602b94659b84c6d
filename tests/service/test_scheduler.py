"""The scheduler against the session's real Ray head (4 CPUs, no GPU) and a real database: what Ray itself
reports (its nodes, a spec as it holds it, an infeasible job left PENDING), the loop, and MLflow runs.
The scheduler's logic (admission order, reconcile, retries, cancel, fencing) is tested without a head
in ``test_scheduler_fast.py``. Jobs started here are cancelled as soon as their admission is checked."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient
from sqlalchemy import update

from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import SchedulerLoop, admit_queued, reconcile, request_cancel
from service.store.models import Attempt, Job, Sweep
from service.store.states import JobStatus
from tests.conftest import spec_with, submitted_spec
from workers.spec import Scaling

if TYPE_CHECKING:
    from conftest import ControlPlane

pytestmark = pytest.mark.ray


def context(plane: ControlPlane) -> SchedulerContext:
    return SchedulerContext(plane.ray, plane.settings, plane.tracker)


def admit(plane: ControlPlane) -> list[int]:
    with plane.factory() as session:
        return admit_queued(session, context(plane))


def cancel(plane: ControlPlane, job_id: int) -> None:
    with plane.factory() as session:
        request_cancel(session, context(plane), session.get(Job, job_id))


def test_a_job_that_can_never_fit_fails_at_once(plane: ControlPlane) -> None:
    gpu_job = plane.add_job(num_gpus=1)
    big_job = plane.add_job(num_cpus=64)
    assert admit(plane) == []
    for job_id in (gpu_job, big_job):
        job = plane.job(job_id)
        assert job.status == JobStatus.FAILED and job.attempts == []
        assert "can never fit" in job.error and "the most any node has: 4 CPU, 0 GPU" in job.error


def test_more_workers_than_the_cluster_can_place_fail_at_once(plane: ControlPlane) -> None:
    job_id = plane.add_job(workers=5, num_cpus=1)
    assert admit(plane) == []
    job = plane.job(job_id)
    assert job.status == JobStatus.FAILED and job.attempts == []
    assert job.error == (
        "can never fit: the job needs 5 workers x 1 CPU and 0 GPU, but the cluster's 1 Ray node(s) can place at most 4"
    )


def test_a_two_worker_job_holds_both_workers_and_its_spec_says_how_to_place_them(plane: ControlPlane) -> None:
    two_workers = plane.add_job(workers=2, num_cpus=2, placement="spread")
    one_more = plane.add_job(num_cpus=1)
    assert admit(plane) == [two_workers]  # 2 x 2 CPUs: the head's 4 are held, one more CPU is not free
    job = plane.job(two_workers)
    attempt = job.attempts[0]
    spec = submitted_spec(plane.ray.address, attempt.ray_submission_id)
    assert spec.scaling == Scaling(workers=2, num_cpus=2, num_gpus=0, placement="spread")
    assert spec.run_name == job.run_dir_name and spec.storage_uri == str(plane.settings.runs_dir)
    cancel(plane, two_workers)
    assert plane.job(one_more).status == JobStatus.QUEUED


def test_a_waiting_big_job_reserves_room_and_sweeps_respect_max_concurrency(plane: ControlPlane) -> None:
    with plane.factory() as session:
        sweep = Sweep(
            name="s", base_config={}, parameters={"loss.mu": {"values": [1, 3]}}, strategy="grid", max_concurrency=1
        )
        session.add(sweep)
        session.commit()
        sweep_id = sweep.id
    cells = [plane.add_job(sweep_id=sweep_id, config_hash=f"cell{i}", priority=9) for i in range(2)]
    assert admit(plane) == [cells[0]]  # one CPU held, the second cell waits for its sweep
    plane.wait_for(cells[0], lambda job: job.mlflow_run_id is not None)  # opened once the cell runs
    with plane.factory() as session:
        parent = session.get(Sweep, sweep_id).mlflow_parent_run_id
    child = MlflowClient(plane.settings.resolved_mlflow_uri).get_run(plane.job(cells[0]).mlflow_run_id)
    assert parent and child.data.tags["mlflow.parentRunId"] == parent
    big = plane.add_job(num_cpus=4, priority=5)
    small = plane.add_job(num_cpus=1, priority=0)
    assert admit(plane) == []  # big does not fit yet; small would, but big's reservation comes first
    assert {plane.job(i).status for i in (cells[1], big, small)} == {JobStatus.QUEUED}


def test_an_attempt_pending_past_the_timeout_is_stopped_and_retried(plane: ControlPlane) -> None:
    job_id = plane.add_job(max_retries=1)
    with plane.factory() as session:  # a submission Ray cannot place: it stays PENDING
        job = session.get(Job, job_id)
        attempt = Attempt(job=job, number=1, submitted_at=datetime.now(UTC) - timedelta(hours=1))
        session.add(attempt)
        session.flush()
        attempt.ray_submission_id = f"mmae-attempt-{attempt.id}-infeasible"
        job.status = JobStatus.STARTING
        session.commit()
        plane.ray.submit(attempt.ray_submission_id, spec_with(Scaling(num_cpus=64)))
        submission_id = attempt.ray_submission_id
    assert plane.ray.status(submission_id).status == "PENDING"
    with plane.factory() as session:
        reconcile(session, context(plane))
    job = plane.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_used == 1
    assert "pending in Ray for more than 900 s" in job.attempts[0].error


def test_the_mlflow_run_is_opened_once_running_and_never_doubled(
    plane: ControlPlane,
) -> None:
    job_id = plane.add_job()
    assert admit(plane) == [job_id]
    assert plane.job(job_id).mlflow_run_id is None  # not on the path from submission to running
    job = plane.wait_for(job_id, lambda job: job.status == JobStatus.RUNNING and job.mlflow_run_id)
    with plane.factory() as session:  # as if the API died after creating the run, before recording it
        session.execute(update(Job).where(Job.id == job_id).values(mlflow_run_id=None))
        session.commit()
    again = plane.wait_for(job_id, lambda job: job.mlflow_run_id is not None)
    assert again.mlflow_run_id == job.mlflow_run_id, "found again by its run-directory tag"
    mlflow = MlflowClient(plane.settings.resolved_mlflow_uri)
    experiment = mlflow.get_experiment_by_name(plane.settings.mlflow_experiment).experiment_id
    assert len(mlflow.search_runs([experiment], filter_string=f"tags.`mmae.job_id` = '{job_id}'")) == 1


def test_a_woken_loop_admits_at_once_and_polls_the_starting_attempt_until_it_runs(plane: ControlPlane) -> None:
    settings = plane.settings.model_copy(update={"scheduler_interval_s": 600, "reconcile_interval_s": 600})
    loop = SchedulerLoop(SchedulerContext(plane.ray, settings, plane.tracker), plane.factory)
    events = asyncio.new_event_loop()
    thread = threading.Thread(target=events.run_until_complete, args=(loop.run(),))
    thread.start()
    try:
        time.sleep(1.0)  # the first passes ran; the next are due in 10 minutes
        job_id = plane.add_job()
        loop.wake()
        deadline = time.monotonic() + 60
        while plane.job(job_id).status != JobStatus.RUNNING:
            assert time.monotonic() < deadline, plane.job(job_id).status
            time.sleep(0.05)
    finally:
        events.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
    assert not thread.is_alive(), "stop() ends the loop after the step in progress"
