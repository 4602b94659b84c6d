"""Admission, cancel, retry and crash recovery against the session's real Ray head (4 CPUs, no GPU)
and a real database. Jobs started here are cancelled as soon as their admission is checked."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient
from sqlalchemy import update
from sqlalchemy.orm.exc import StaleDataError

from service.cluster import ray_head
from service.scheduling.scheduler import SchedulerLoop, admit_queued, reconcile, request_cancel, retry_job
from service.store.models import Attempt, AttemptProgress, Job, Sweep
from service.store.states import InvalidTransition, JobStatus
from tests.conftest import spec_with, submitted_spec
from workers.spec import Scaling

if TYPE_CHECKING:
    from conftest import ControlPlane

pytestmark = pytest.mark.ray


def admit(plane: ControlPlane) -> list[int]:
    with plane.factory() as session:
        return admit_queued(session, plane.ray, plane.settings)


def cancel(plane: ControlPlane, job_id: int) -> None:
    with plane.factory() as session:
        request_cancel(session, plane.ray, session.get(Job, job_id), plane.tracker)


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


def test_admission_takes_priority_then_fifo_and_waits_for_room(plane: ControlPlane) -> None:
    low = plane.add_job(name="low", num_cpus=4, priority=0)
    first_high = plane.add_job(name="first-high", num_cpus=4, priority=5)
    second_high = plane.add_job(name="second-high", num_cpus=4, priority=5)
    assert admit(plane) == [first_high]
    assert admit(plane) == []  # the cluster's 4 CPUs are held
    attempt = plane.job(first_high).attempts[0]
    assert attempt.ray_submission_id.startswith(f"mmae-attempt-{attempt.id}-")
    assert plane.ray.status(attempt.ray_submission_id) is not None
    cancel(plane, first_high)
    plane.wait_for(first_high, lambda job: job.status == JobStatus.CANCELLED)  # ticks admit the next one
    assert plane.job(second_high).status in (JobStatus.STARTING, JobStatus.RUNNING)
    assert plane.job(low).status == JobStatus.QUEUED


def test_a_waiting_big_job_reserves_room_and_sweeps_respect_max_concurrency(plane: ControlPlane) -> None:
    with plane.factory() as session:
        sweep = Sweep(name="s", base_config={}, parameters={"loss.mu": {"values": [1, 3]}}, strategy="grid",
                      max_concurrency=1)
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


def test_an_attempt_committed_but_never_submitted_is_submitted_by_reconcile(plane: ControlPlane) -> None:
    job_id = plane.add_job()
    with plane.factory() as session:  # what a crash between commit and submit leaves behind
        job = session.get(Job, job_id)
        attempt = Attempt(job=job, number=1)
        session.add(attempt)
        session.flush()
        attempt.ray_submission_id = f"mmae-attempt-{attempt.id}-lost"
        job.status = JobStatus.STARTING
        session.commit()
        submission_id = attempt.ray_submission_id
    assert plane.ray.status(submission_id) is None
    plane.tick()
    assert plane.ray.status(submission_id) is not None
    job = plane.job(job_id)
    assert len(job.attempts) == 1 and job.status in (JobStatus.STARTING, JobStatus.RUNNING)


def test_user_retry_requeues_only_ended_jobs(plane: ControlPlane) -> None:
    job_id = plane.add_job()
    with plane.factory() as session:
        job = session.get(Job, job_id)
        with pytest.raises(InvalidTransition):
            retry_job(session, job)
        request_cancel(session, plane.ray, job)
        assert job.status == JobStatus.CANCELLED and job.finished_at is not None
        job.retries_used = 2
        session.commit()
        retry_job(session, job)
        assert (job.status, job.retries_used, job.finished_at) == (JobStatus.QUEUED, 0, None)


def test_concurrent_status_changes_cannot_overwrite_each_other(plane: ControlPlane) -> None:
    job_id = plane.add_job()
    with plane.factory() as api, plane.factory() as scheduler:
        seen_by_scheduler = scheduler.get(Job, job_id)
        seen_by_scheduler.priority = 3
        request_cancel(api, plane.ray, api.get(Job, job_id))
        with pytest.raises(StaleDataError):
            scheduler.commit()
    assert plane.job(job_id).status == JobStatus.CANCELLED


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
        reconcile(session, plane.ray, plane.settings)
    job = plane.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_used == 1
    assert "pending in Ray for more than 900 s" in job.attempts[0].error


@pytest.mark.parametrize(("status", "outcome"), [(JobStatus.RUNNING, JobStatus.QUEUED),
                                                 (JobStatus.CANCELLING, JobStatus.CANCELLED)])
def test_an_attempt_ray_forgot_is_retried_or_ends_the_cancel(
    plane: ControlPlane, status: JobStatus, outcome: JobStatus
) -> None:
    job_id = plane.add_job()
    with plane.factory() as session:  # what a Ray head restarted under a running job leaves behind
        job = session.get(Job, job_id)
        session.add(Attempt(job=job, number=1, ray_submission_id=f"mmae-attempt-{job_id}-forgotten",
                            status="running", started_at=datetime.now(UTC)))
        job.status = status
        session.commit()
        reconcile(session, plane.ray, plane.settings)
    job = plane.job(job_id)
    assert job.status == outcome and job.attempts[0].status in ("failed", "stopped")
    if outcome == JobStatus.QUEUED:
        assert job.retries_used == 1 and "has no record of" in job.attempts[0].error


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
    loop = SchedulerLoop(settings, plane.factory, plane.ray, plane.tracker)
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


def test_a_finished_summary_with_nan_is_recorded_with_nulls(plane: ControlPlane) -> None:
    from ray.job_submission import JobSubmissionClient

    job_id = plane.add_job()
    with plane.factory() as session:  # an attempt whose worker wrote NaN (SQLite stores it as text)
        job = session.get(Job, job_id)
        attempt = Attempt(job=job, number=1, status="running", started_at=datetime.now(UTC))
        session.add(attempt)
        session.flush()
        attempt.ray_submission_id = f"mmae-attempt-{attempt.id}-nan"
        job.status = JobStatus.RUNNING
        session.add(AttemptProgress(attempt_id=attempt.id, job_id=job_id, step=20, total_steps=20, phase="done",
                                    summary={"train/loss": math.nan, "eval/linear_top1": 0.5},
                                    heartbeat_at=datetime.now(UTC)))
        session.commit()
        submission_id = attempt.ray_submission_id
    ray_jobs = JobSubmissionClient(plane.ray.address, headers=ray_head.auth_headers())
    ray_jobs.submit_job(entrypoint="true", submission_id=submission_id)
    deadline = time.monotonic() + 60
    while plane.ray.status(submission_id).status != "SUCCEEDED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    with plane.factory() as session:
        reconcile(session, plane.ray, plane.settings)
    job = plane.job(job_id)
    assert job.status == JobStatus.SUCCEEDED
    assert job.summary == {"train/loss": None, "eval/linear_top1": 0.5}
