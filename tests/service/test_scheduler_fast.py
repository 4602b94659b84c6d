"""The scheduler against the in-memory Ray (``fake_ray.FakeRay``) and a real SQLite database: admission,
reconciliation, retries, cancel and the fencing rule, each Ray event made by the test. No Ray head:
the whole module runs in about a second (``tests/service/test_scheduler.py`` keeps the real-head tests)."""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from mmae.config import TrainConfig, config_hash
from service.cluster.ray_client import RayBusy, RayClient, RayJobsClient, RayUnavailable
from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import SchedulerLoop, admit_queued, reconcile, request_cancel, retry_job
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.models import Attempt, AttemptProgress, Job, Sweep
from service.store.states import AttemptStatus, InvalidTransition, JobStatus
from service.tracking.tracker import Tracker
from tests.service.fake_ray import FakeRay
from workers.spec import EXIT_PERMANENT, AttemptSpec

CONFIG = TrainConfig.model_validate({"steps": 20})


@dataclass
class Plane:
    """The scheduler's functions on one database and one ``FakeRay``, driven by hand."""

    context: SchedulerContext
    factory: sessionmaker[Session]
    ray: FakeRay

    def add_job(self, **fields: Any) -> int:
        """Queue a 1-CPU job (``fields`` override); returns its id."""
        with self.factory() as session:
            defaults = {"name": "j", "config_hash": config_hash(CONFIG), "num_cpus": 1.0}
            job = Job(method=CONFIG.method, config=CONFIG.model_dump(mode="json"), **(defaults | fields))
            session.add(job)
            session.commit()
            return job.id

    def admit(self) -> list[int]:
        with self.factory() as session:
            return admit_queued(session, self.context)

    def reconcile(self) -> list[int]:
        with self.factory() as session:
            return reconcile(session, self.context)

    def cancel(self, job_id: int) -> None:
        with self.factory() as session:
            request_cancel(session, self.context, session.get(Job, job_id))

    def job(self, job_id: int) -> Job:
        with self.factory() as session:
            return session.get(Job, job_id, options=[selectinload(Job.attempts)])

    def submission(self, job_id: int) -> str:
        """The Ray submission id of the job's latest attempt."""
        return self.job(job_id).attempts[-1].ray_submission_id

    def report(
        self,
        job_id: int,
        phase: str = "training",
        summary: dict[str, Any] | None = None,
        heartbeat_at: datetime | None = None,
    ) -> None:
        """What the worker of the job's latest attempt writes: its progress row (a heartbeat)."""
        attempt = self.job(job_id).attempts[-1]
        with self.factory() as session:
            session.merge(
                AttemptProgress(
                    attempt_id=attempt.id,
                    job_id=job_id,
                    step=20,
                    total_steps=20,
                    phase=phase,
                    summary=summary,
                    heartbeat_at=heartbeat_at or datetime.now(UTC),
                )
            )
            session.commit()

    def start(self, job_id: int) -> str:
        """Admit the job (it must be next), run it in Ray and reconcile: it is running. Its submission id."""
        assert job_id in self.admit()
        submission_id = self.submission(job_id)
        self.ray.run(submission_id)
        self.reconcile()
        assert self.job(job_id).status == JobStatus.RUNNING
        return submission_id


@pytest.fixture
def engine(migrated_sqlite: Path, tmp_path: Path) -> Iterator[Engine]:
    shutil.copy(migrated_sqlite, tmp_path / "mmae.db")
    engine = make_engine(f"sqlite:///{tmp_path / 'mmae.db'}")
    yield engine
    engine.dispose()


def plane_of(engine: Engine, tmp_path: Path, ray: FakeRay, **fields: Any) -> Plane:
    settings = Settings(data_dir=tmp_path / "data", database_url=str(engine.url), **fields)
    return Plane(SchedulerContext(ray, settings, Tracker(settings)), make_session_factory(engine), ray)


@pytest.fixture
def plane(engine: Engine, tmp_path: Path) -> Plane:
    """One 4-CPU node, no GPU."""
    return plane_of(engine, tmp_path, FakeRay())


def test_the_fake_and_the_http_client_both_have_every_member_of_the_protocol() -> None:
    members = {name for name in vars(RayClient) if not name.startswith("_")} | set(RayClient.__annotations__)
    real = RayJobsClient("http://ray.invalid:8265", start_local=False, stop_grace_s=1)
    assert {"submit", "status", "stop", "logs", "cluster_resources", "start_local"} <= members
    for client in (FakeRay(), real):
        assert not [name for name in members if not hasattr(client, name)], type(client).__name__


# Admission


def test_admission_takes_priority_then_fifo(plane: Plane) -> None:
    low = plane.add_job(priority=0)
    first, second = plane.add_job(priority=5), plane.add_job(priority=5)
    urgent = plane.add_job(priority=9)
    third = plane.add_job(priority=5)
    assert plane.admit() == [urgent, first, second, third]  # 4 CPUs: four 1-CPU jobs
    assert plane.job(low).status == JobStatus.QUEUED
    assert plane.admit() == [], "the node's 4 CPUs are held"


def test_a_job_that_does_not_fit_reserves_its_share_so_smaller_ones_cannot_starve_it(plane: Plane) -> None:
    running = plane.add_job(num_cpus=2)
    assert plane.admit() == [running]
    big, small = plane.add_job(num_cpus=4, priority=5), plane.add_job(num_cpus=1)
    assert plane.admit() == [], "2 CPUs are free; the big job waits and the small one waits behind it"
    plane.cancel(running)
    plane.reconcile()
    assert plane.admit() == [big]
    assert plane.job(small).status == JobStatus.QUEUED


def test_admission_counts_cpus_and_gpus_of_every_worker(engine: Engine, tmp_path: Path) -> None:
    plane = plane_of(engine, tmp_path, FakeRay({"CPU": 8, "GPU": 2}, {"CPU": 8, "GPU": 2}))
    two_gpus = plane.add_job(workers=2, num_cpus=2, num_gpus=1)  # 4 CPUs, 2 GPUs in all
    three_gpus = plane.add_job(workers=3, num_cpus=1, num_gpus=1)  # 3 GPUs: 2 are left
    cpu_job = plane.add_job(num_cpus=4)
    assert plane.admit() == [two_gpus, cpu_job], "GPUs a waiting job reserves hold back no CPU job"
    assert plane.job(three_gpus).status == JobStatus.QUEUED
    spec = plane.ray.jobs[plane.submission(two_gpus)].spec
    assert (spec.scaling.workers, spec.scaling.num_cpus, spec.scaling.num_gpus) == (2, 2, 1)


def test_a_job_no_node_could_ever_hold_fails_at_once(engine: Engine, tmp_path: Path) -> None:
    plane = plane_of(engine, tmp_path, FakeRay({"CPU": 8, "GPU": 1}))
    too_many_gpus = plane.add_job(num_gpus=2)
    assert plane.admit() == []
    job = plane.job(too_many_gpus)
    assert job.status == JobStatus.FAILED and job.attempts == [] and "can never fit" in job.error
    assert plane.ray.jobs == {}


def test_a_sweep_runs_at_most_max_concurrency_cells(plane: Plane) -> None:
    with plane.factory() as session:
        sweep = Sweep(name="s", base_config={}, parameters={}, strategy="grid", max_concurrency=2)
        session.add(sweep)
        session.commit()
        sweep_id = sweep.id
    cells = [plane.add_job(sweep_id=sweep_id, config_hash=f"cell{i}") for i in range(3)]
    assert plane.admit() == cells[:2]
    assert plane.admit() == []


# Reconciliation


def test_a_running_attempt_that_finishes_succeeds_with_its_summary(plane: Plane) -> None:
    job_id = plane.add_job()
    submission_id = plane.start(job_id)
    job = plane.job(job_id)
    assert job.started_at is not None and job.attempts[0].status == AttemptStatus.RUNNING
    plane.report(job_id, phase="done", summary={"eval/linear_top1": 0.75})
    plane.ray.end(submission_id, "SUCCEEDED", exit_code=0)
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.attempts[0].status == AttemptStatus.SUCCEEDED
    assert job.summary == {"eval/linear_top1": 0.75} and job.linear_top1 == 0.75 and job.finished_at


def test_a_finished_summary_with_nan_is_recorded_with_nulls(plane: Plane) -> None:
    job_id = plane.add_job()
    submission_id = plane.start(job_id)
    plane.report(job_id, phase="done", summary={"train/loss": math.nan, "eval/linear_top1": 0.5})
    plane.ray.end(submission_id, "SUCCEEDED", exit_code=0)
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.SUCCEEDED and job.summary == {"train/loss": None, "eval/linear_top1": 0.5}


def test_a_worker_that_exits_zero_before_training_ended_is_a_failure(plane: Plane) -> None:
    job_id = plane.add_job(max_retries=0)
    plane.ray.end(plane.start(job_id), "SUCCEEDED", exit_code=0)
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.FAILED and "exited before training ended" in job.error


def test_a_permanent_failure_is_not_retried_and_keeps_rays_reason_and_log_tail(plane: Plane) -> None:
    job_id = plane.add_job(max_retries=3)
    submission_id = plane.start(job_id)
    log = "\n".join(f"line {i}" for i in range(100))
    plane.ray.end(submission_id, "FAILED", exit_code=EXIT_PERMANENT, message="Job entrypoint command failed", logs=log)
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.FAILED and job.retries_used == 0 and len(job.attempts) == 1
    assert f"Job entrypoint command failed (exit code {EXIT_PERMANENT})" in job.error
    assert job.error.endswith("line 99") and "line 69" not in job.error, "the last 30 lines"


def test_a_job_ray_lost_while_running_is_retried(plane: Plane) -> None:
    job_id = plane.add_job(max_retries=1)
    plane.ray.lose(plane.start(job_id))
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.QUEUED and job.retries_used == 1
    assert job.attempts[0].status == AttemptStatus.FAILED and "has no record of" in job.attempts[0].error


def test_an_attempt_committed_but_never_submitted_is_submitted_once_by_reconcile(plane: Plane) -> None:
    job_id = plane.add_job()
    plane.ray.faults["submit"].append(RayUnavailable("no answer"))  # as if the API died before submitting
    with pytest.raises(RayUnavailable):
        plane.admit()
    submission_id = plane.submission(job_id)
    assert plane.job(job_id).status == JobStatus.STARTING and plane.ray.jobs == {}
    plane.ray.forget_submission(submission_id)  # a restarted API has no backoff to wait out
    assert plane.reconcile() == [job_id], "still starting"
    assert list(plane.ray.jobs) == [submission_id] and len(plane.job(job_id).attempts) == 1
    plane.reconcile()
    assert list(plane.ray.jobs) == [submission_id], "submitted once"


def test_no_answer_from_ray_ends_the_pass_and_ray_busy_about_one_job_skips_only_that_job(plane: Plane) -> None:
    first, second = plane.add_job(), plane.add_job()
    assert plane.admit() == [first, second]
    for job_id in (first, second):
        plane.ray.run(plane.submission(job_id))

    def statuses() -> list[str]:
        return [plane.job(job_id).status for job_id in (first, second)]

    plane.ray.faults["status"].append(RayUnavailable("no answer"))
    with pytest.raises(RayUnavailable):
        plane.reconcile()
    assert statuses() == [JobStatus.STARTING, JobStatus.STARTING]
    plane.ray.faults["status"].append(RayBusy("Ray answered 503"))
    assert plane.reconcile() == [first]
    assert statuses() == [JobStatus.STARTING, JobStatus.RUNNING]
    plane.reconcile()
    assert statuses() == [JobStatus.RUNNING, JobStatus.RUNNING]


def test_an_attempt_pending_past_the_timeout_is_stopped_and_retried(engine: Engine, tmp_path: Path) -> None:
    plane = plane_of(engine, tmp_path, FakeRay(), pending_timeout_s=60)
    job_id = plane.add_job(max_retries=1)
    assert plane.admit() == [job_id]
    submission_id = plane.submission(job_id)
    with plane.factory() as session:
        session.execute(update(Attempt).values(submitted_at=datetime.now(UTC) - timedelta(minutes=2)))
        session.commit()
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.QUEUED and "pending in Ray for more than 60 s" in job.attempts[0].error
    assert plane.ray.jobs[submission_id].status == "STOPPED"


# Retries


def test_a_failed_attempt_is_retried_from_the_jobs_run_storage_until_retries_run_out(plane: Plane) -> None:
    job_id = plane.add_job(max_retries=1)
    plane.ray.end(plane.start(job_id), "FAILED", exit_code=1, message="worker died")
    plane.reconcile()
    assert plane.job(job_id).status == JobStatus.QUEUED
    second = plane.start(job_id)
    first_spec, second_spec = (plane.ray.jobs[s].spec for s in plane.ray.submissions(job_id))
    assert second_spec.attempt_id != first_spec.attempt_id
    assert (second_spec.run_name, second_spec.storage_uri) == (first_spec.run_name, first_spec.storage_uri), (
        "the retry resumes from the checkpoints the first attempt left"
    )
    assert second_spec.run_name == plane.job(job_id).run_dir_name
    plane.ray.end(second, "FAILED", exit_code=1, message="worker died again")
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.FAILED and job.retries_used == 1 and len(job.attempts) == 2
    assert job.error.startswith("attempt 2 failed: worker died again")


def test_a_users_retry_requeues_an_ended_job_at_the_end_with_a_fresh_budget(plane: Plane) -> None:
    job_id = plane.add_job(max_retries=0)
    plane.ray.end(plane.start(job_id), "FAILED", exit_code=1)
    plane.reconcile()
    waiting = plane.add_job()
    with plane.factory() as session:
        job = session.get(Job, job_id)
        retry_job(session, job)
        assert (job.status, job.retries_used, job.error, job.finished_at) == (JobStatus.QUEUED, 0, None, None)
        with pytest.raises(InvalidTransition):
            retry_job(session, job)
    assert plane.admit() == [waiting, job_id], "re-queued behind the jobs already waiting"


# Cancel


def test_a_queued_job_is_cancelled_at_once_without_ray(plane: Plane) -> None:
    job_id = plane.add_job()
    plane.ray.down = True
    plane.cancel(job_id)
    job = plane.job(job_id)
    assert job.status == JobStatus.CANCELLED and job.finished_at is not None and job.attempts == []


def test_a_running_job_is_cancelling_until_ray_stopped_it_then_cancelled(plane: Plane) -> None:
    job_id = plane.add_job()
    submission_id = plane.start(job_id)
    plane.ray.faults["stop"].append(RayUnavailable("no answer"))
    plane.cancel(job_id)  # Ray did not hear it: the job is cancelling all the same
    job = plane.job(job_id)
    assert job.status == JobStatus.CANCELLING and job.cancel_requested_at is not None
    assert plane.ray.jobs[submission_id].status == "RUNNING"
    plane.reconcile()  # sends the stop again: Ray stops the job
    assert plane.ray.jobs[submission_id].status == "STOPPED"
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.CANCELLED and job.attempts[0].status == AttemptStatus.STOPPED
    with pytest.raises(InvalidTransition):
        plane.cancel(job_id)


def test_a_cancel_that_read_the_job_before_the_scheduler_started_it_decides_again(plane: Plane) -> None:
    job_id = plane.add_job()
    with plane.factory() as api:
        job = api.get(Job, job_id)
        assert job.status == JobStatus.QUEUED  # the API's read, before the scheduler's pass commits
        assert plane.admit() == [job_id]
        request_cancel(api, plane.context, job)
    assert plane.job(job_id).status == JobStatus.CANCELLING, "not cancelled as if still queued"
    assert plane.ray.jobs[plane.submission(job_id)].status == "STOPPED"


def test_a_cancelling_job_ray_forgot_is_cancelled(plane: Plane) -> None:
    job_id = plane.add_job()
    submission_id = plane.start(job_id)
    plane.ray.faults["stop"].append(RayUnavailable("no answer"))
    plane.cancel(job_id)
    plane.ray.lose(submission_id)  # the head restarted before it heard the stop
    plane.reconcile()
    job = plane.job(job_id)
    assert job.status == JobStatus.CANCELLED and job.attempts[0].status == AttemptStatus.STOPPED
    assert job.retries_used == 0


def test_concurrent_status_changes_cannot_overwrite_each_other(plane: Plane) -> None:
    job_id = plane.add_job()
    with plane.factory() as api, plane.factory() as scheduler:
        seen_by_scheduler = scheduler.get(Job, job_id)
        seen_by_scheduler.priority = 3
        request_cancel(api, plane.context, api.get(Job, job_id))
        with pytest.raises(StaleDataError):
            scheduler.commit()
    assert plane.job(job_id).status == JobStatus.CANCELLED


# Fencing: never two live attempts of one job


def test_an_attempt_reaches_ray_only_once_committed_and_after_the_old_one_is_ended_in_the_database(
    engine: Engine, tmp_path: Path
) -> None:
    plane = plane_of(engine, tmp_path, FakeRay(), heartbeat_timeout_s=30, pending_timeout_s=60)
    live_at_submit: list[list[int]] = []

    def live_attempts(_submission_id: str, spec: AttemptSpec) -> None:
        with engine.connect() as connection:  # what a worker's fenced flush would see now
            live = connection.scalars(
                select(Attempt.id).where(
                    Attempt.job_id == spec.job_id,
                    Attempt.status.in_((AttemptStatus.PENDING, AttemptStatus.RUNNING)),
                )
            )
            live_at_submit.append([attempt_id - spec.attempt_id for attempt_id in live])

    plane.ray.on_submit = live_attempts
    job_id = plane.add_job(max_retries=3)
    first = plane.start(job_id)
    plane.report(job_id, heartbeat_at=datetime.now(UTC) - timedelta(minutes=5))  # the worker hung
    plane.ray.faults["stop"].append(RayUnavailable("no answer"))
    with pytest.raises(RayUnavailable):
        plane.reconcile()
    assert plane.job(job_id).attempts[0].status == AttemptStatus.FAILED, "fenced before Ray is asked to stop it"
    assert plane.ray.jobs[first].status == "RUNNING", "Ray still runs the hung worker"
    second = plane.start(job_id)
    plane.ray.lose(second)
    plane.reconcile()
    plane.start(job_id)
    assert live_at_submit == [[0], [0], [0]], "the submitted attempt, committed, and no other"
    attempts = plane.job(job_id).attempts
    assert [a.status for a in attempts] == [AttemptStatus.FAILED, AttemptStatus.FAILED, AttemptStatus.RUNNING]
    assert "no heartbeat for" in attempts[0].error


def test_the_mlflow_sync_is_woken_only_by_a_step_that_moved_a_job(plane: Plane) -> None:
    loop = SchedulerLoop(plane.context, plane.factory)
    changed = plane.context.tracker.changed
    assert loop._run_step(admit_queued) == [] and not changed.is_set()  # an idle pass: MLflow has nothing new
    job_id = plane.add_job()
    assert loop._run_step(admit_queued) == [job_id] and changed.is_set()  # queued -> starting
    changed.clear()
    assert loop._run_step(reconcile) == [job_id] and not changed.is_set()  # still starting: nothing moved
    plane.ray.run(plane.submission(job_id))
    loop._run_step(reconcile)
    assert plane.job(job_id).status == JobStatus.RUNNING and changed.is_set()
