"""Attempts run end to end through the session's Ray head: a tiny M-MAE pretraining on digits with its
evaluation, metrics in SQL and MLflow, a worker killed mid-run and retried from its checkpoint, a cancel
that ends within the stop grace, and the fencing rule under faults: a dead supervisor takes its trainer
with it, a hung worker is failed by its silent heartbeat, and a stale attempt started by hand changes
nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from mlflow import MlflowClient
from sqlalchemy import select

from mmae.checkpoint import last_checkpoint
from mmae.config import TrainConfig, flatten_config
from mmae.train import fit
from service.scheduling.attempts import attempt_spec
from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import SchedulerLoop, request_cancel
from service.store.models import AttemptProgress, Job, MetricPoint
from service.store.states import AttemptStatus, JobStatus
from tests.tiny_config import TINY, tiny
from workers.spec import EXIT_FENCED

if TYPE_CHECKING:
    from conftest import ControlPlane

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def with_steps(steps: int, checkpoint_every: int) -> dict[str, Any]:
    return tiny(steps=steps, checkpoint_every=checkpoint_every)


def wait_until(condition: Callable[[], Any], timeout_s: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)
    return value


def steps_of(plane: ControlPlane, job_id: int, name: str) -> list[int]:
    with plane.factory() as session:
        query = select(MetricPoint.step).where(MetricPoint.job_id == job_id, MetricPoint.name == name)
        return sorted(session.scalars(query))


def progress(plane: ControlPlane, attempt_id: int) -> AttemptProgress | None:
    with plane.factory() as session:
        return session.get(AttemptProgress, attempt_id)


def worker_pid(attempt_id: int) -> int | None:
    """Pid of attempt ``attempt_id``'s ``python -m workers.run --attempt ID`` process, if it runs."""
    for entry in Path("/proc").iterdir():
        try:
            argv = (entry / "cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if b"workers.run" in argv and argv[-2:] == [b"--attempt", str(attempt_id).encode()]:
            return int(entry.name)
    return None


def parent_pid(pid: int) -> int:
    """The parent of process ``pid`` (field 4 of /proc/PID/stat, after the parenthesised name)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def mlflow_steps(plane: ControlPlane, run_id: str, name: str) -> list[int]:
    client = MlflowClient(plane.settings.resolved_mlflow_uri)
    return sorted(metric.step for metric in client.get_metric_history(run_id, name))


def test_a_job_runs_through_ray_and_reports_to_sql_and_mlflow(plane: ControlPlane) -> None:
    job_id = plane.add_job(TINY, name="tiny")
    scheduler = SchedulerLoop(SchedulerContext(plane.ray, plane.settings, plane.tracker), plane.factory)
    events = asyncio.new_event_loop()
    thread = threading.Thread(target=events.run_until_complete, args=(scheduler.run(),))
    thread.start()
    client = MlflowClient(plane.settings.resolved_mlflow_uri)
    try:
        job = wait_until(lambda: (j := plane.job(job_id)).status in ("succeeded", "failed") and j, 240)
        # the loop's MLflow thread closes the run within a pass of the job's end
        wait_until(lambda: client.get_run(job.mlflow_run_id).info.status != "RUNNING", 30)
    finally:
        events.call_soon_threadsafe(scheduler.stop)
        thread.join()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [attempt.status for attempt in job.attempts] == [AttemptStatus.SUCCEEDED]
    assert 0.0 <= job.summary["eval/linear_top1"] <= 1.0 and "eval/knn_top1" in job.summary
    assert steps_of(plane, job_id, "train/loss") == list(range(1, 21))
    assert steps_of(plane, job_id, "info/erank") == [5, 10, 15, 20]
    assert steps_of(plane, job_id, "eval/linear_top1") == [20]
    done = progress(plane, job.attempts[0].id)
    assert (done.phase, done.step, done.total_steps, done.last_checkpoint_step) == ("done", 20, 20, 20)

    run = client.get_run(job.mlflow_run_id)
    assert run.info.status == "FINISHED"
    expected = {key: str(value) for key, value in flatten_config(TrainConfig.model_validate(TINY)).items()}
    assert run.data.params == expected
    assert {"config_hash", "mmae_version", "mu_convention", "world_size", "seed"} <= set(run.data.tags)
    assert run.data.metrics["eval/linear_top1"] == pytest.approx(job.summary["eval/linear_top1"])
    assert len(client.get_metric_history(run.info.run_id, "train/loss")) == 20
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "information_curves.png", "checkpoints"} <= artifacts
    assert client.list_artifacts(run.info.run_id, "checkpoints")[0].path.endswith(".pt")
    assert list((plane.settings.data_dir / "mlartifacts").rglob("information_curves.png"))
    assert "[mmae] finished at step 20" in plane.ray.logs(job.attempts[0].ray_submission_id)


def test_a_killed_worker_is_retried_from_its_checkpoint_without_gaps_or_duplicates(
    plane: ControlPlane,
) -> None:
    job_id = plane.add_job(with_steps(60, 10), max_retries=2)
    first = plane.wait_for(job_id, lambda job: bool(job.attempts)).attempts[0]
    plane.wait_for(job_id, lambda _: (p := progress(plane, first.id)) and (p.last_checkpoint_step or 0) >= 10)
    assert plane.job(job_id).run_dir_name.startswith(f"job-{job_id}-")  # unique: a reused id starts afresh
    os.kill(wait_until(lambda: worker_pid(first.id)), signal.SIGKILL)

    job = plane.wait_for(job_id, lambda job: job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED), 240)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [a.status for a in job.attempts] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]
    assert "exit code -9" in job.attempts[0].error and job.retries_used == 1  # the trainer itself, no shell
    assert progress(plane, job.attempts[1].id).run_info["start_step"] >= 10
    assert steps_of(plane, job_id, "train/loss") == list(range(1, 61))
    client = MlflowClient(plane.settings.resolved_mlflow_uri)
    history = client.get_metric_history(job.mlflow_run_id, "train/loss")
    assert sorted(metric.step for metric in history) == list(range(1, 61))


def test_cancelling_a_running_job_ends_it_within_ten_seconds(plane: ControlPlane) -> None:
    job_id = plane.add_job(with_steps(5000, 2500))
    attempt = plane.wait_for(job_id, lambda job: bool(job.attempts)).attempts[0]
    plane.wait_for(job_id, lambda _: (p := progress(plane, attempt.id)) and p.step >= 2)
    started = time.monotonic()
    with plane.factory() as session:
        request_cancel(session, SchedulerContext(plane.ray, plane.settings, plane.tracker), session.get(Job, job_id))
    job = plane.wait_for(job_id, lambda job: job.status == JobStatus.CANCELLED, timeout_s=30)
    assert time.monotonic() - started < 10
    assert job.attempts[0].status == AttemptStatus.STOPPED
    stopped = progress(plane, attempt.id)
    assert stopped.phase == "stopped" and stopped.last_checkpoint_step == stopped.step < 5000
    run = MlflowClient(plane.settings.resolved_mlflow_uri).get_run(job.mlflow_run_id)
    assert run.info.status == "KILLED"


@pytest.mark.parametrize(
    "plane_settings", [{}, pytest.param({"database": "postgresql"}, marks=pytest.mark.postgres)], indirect=True
)
def test_a_dead_supervisor_takes_its_trainer_along_and_a_stale_attempt_changes_nothing(
    plane: ControlPlane, tmp_path: Path
) -> None:
    config = with_steps(60, 10)
    job_id = plane.add_job(config, max_retries=2)
    first = plane.wait_for(job_id, lambda job: bool(job.attempts)).attempts[0]
    plane.wait_for(job_id, lambda _: (p := progress(plane, first.id)) and (p.last_checkpoint_step or 0) >= 10)
    trainer = wait_until(lambda: worker_pid(first.id))
    os.kill(parent_pid(trainer), signal.SIGKILL)  # Ray's job supervisor, which exec'd the trainer
    wait_until(lambda: not alive(trainer), timeout_s=10)

    job = plane.wait_for(job_id, lambda job: job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED), 240)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [a.status for a in job.attempts] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]
    assert progress(plane, job.attempts[1].id).run_info["start_step"] >= 10
    assert mlflow_steps(plane, job.mlflow_run_id, "train/loss") == list(range(1, 61))
    assert mlflow_steps(plane, job.mlflow_run_id, "info/erank") == list(range(5, 61, 5))
    uninterrupted = fit(TrainConfig.model_validate(config), tmp_path / "uninterrupted").summary
    for name in ("train/loss", "info/erank", "eval/linear_top1"):
        assert job.summary[name] == pytest.approx(uninterrupted[name], rel=1e-5), name

    # The first attempt's spec, started again by hand: refused on its first write, it exits at once.
    with plane.factory() as session:
        job_row = session.get(Job, job_id)
        spec = tmp_path / "stale-spec.json"
        spec.write_text(attempt_spec(plane.settings, job_row, job_row.attempts[0]).model_dump_json())
    run_dir = plane.settings.runs_dir / job.run_dir_name
    checkpoint = last_checkpoint(run_dir).read_bytes()
    series = steps_of(plane, job_id, "train/loss")
    stale = subprocess.run(
        [sys.executable, "-m", "workers.run", "--spec", str(spec)], capture_output=True, text=True, timeout=120
    )
    assert stale.returncode == EXIT_FENCED, stale.stdout + stale.stderr
    assert f"attempt {first.id} is no longer the current attempt of job {job_id}" in stale.stdout
    assert last_checkpoint(run_dir).read_bytes() == checkpoint
    assert steps_of(plane, job_id, "train/loss") == series
    assert mlflow_steps(plane, job.mlflow_run_id, "train/loss") == list(range(1, 61))


@pytest.mark.parametrize(
    "plane_settings",
    [{"heartbeat_interval_s": 1.0, "heartbeat_timeout_s": 20.0, "stop_grace_s": 3}],
    indirect=True,
)
def test_a_hung_worker_is_failed_by_its_silent_heartbeat_and_retried(plane: ControlPlane) -> None:
    job_id = plane.add_job(with_steps(60, 10), max_retries=2)
    first = plane.wait_for(job_id, lambda job: bool(job.attempts)).attempts[0]
    plane.wait_for(job_id, lambda _: (p := progress(plane, first.id)) and (p.last_checkpoint_step or 0) >= 10)
    trainer = wait_until(lambda: worker_pid(first.id))
    os.kill(trainer, signal.SIGSTOP)  # hung: alive in Ray's eyes, silent in ours

    job = plane.wait_for(job_id, lambda job: job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED), 240)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [a.status for a in job.attempts] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]
    assert "no heartbeat for" in job.attempts[0].error
    assert not alive(trainer)  # Ray's stop killed it after the grace
    assert steps_of(plane, job_id, "train/loss") == list(range(1, 61))
    assert mlflow_steps(plane, job.mlflow_run_id, "train/loss") == list(range(1, 61))
