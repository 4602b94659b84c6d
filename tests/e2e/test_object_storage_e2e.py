"""A job whose run storage is S3 (a local emulator) and whose workers share no filesystem with the API:
checkpoints go to the bucket, a retry on a wiped node resumes from there, and storage the workers cannot
reach fails the attempt with a line naming the URI and nothing half-written in SQL."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from pyarrow import fs

from service.cluster.ray_client import RayJobsClient
from service.cluster.ray_head import temporary_head
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.migrations import upgrade_to_head
from service.store.states import AttemptStatus, JobStatus
from service.tracking.tracker import Tracker
from tests.conftest import ControlPlane
from tests.s3_server import S3Emulator, s3_emulator
from tests.workers.test_attempt_e2e import progress, steps_of, wait_until, with_steps, worker_pid
from workers.attempt import scratch_root

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def s3_plane(
    tmp_path: Path, own_postgres_url: str, mlflow_store: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ControlPlane, S3Emulator]]:
    """The execution side with MMAE_STORAGE_URI in an S3 emulator, on a Ray head of its own whose workers
    (and only they) hold the bucket's credentials, and PostgreSQL for the database."""
    with s3_emulator() as s3:
        for name, value in s3.env().items():
            monkeypatch.setenv(name, value)  # the head's workers inherit them; the API never reads them
        with temporary_head(tmp_path / "ray_token", num_cpus=2, num_gpus=0) as address:
            settings = Settings(
                data_dir=tmp_path / "api-data",
                database_url=own_postgres_url,
                ray_address=address,
                mlflow_tracking_uri=mlflow_store,
                mlflow_experiment=f"s3-{tmp_path.name}",
                storage_uri=f"s3://{s3.bucket}/runs",
                reconcile_interval_s=0.5,
                scheduler_interval_s=0.2,
            )
            engine = make_engine(settings.resolved_database_url)
            upgrade_to_head(engine)
            ray = RayJobsClient.from_settings(settings)
            ray.connect()
            plane = ControlPlane(settings, make_session_factory(engine), ray, Tracker(settings))
            try:
                yield plane, s3
            finally:
                plane.cancel_all()
                engine.dispose()


def bucket_keys(s3: S3Emulator, prefix: str) -> list[str]:
    bucket = fs.S3FileSystem(
        access_key=s3.access_key_id,
        secret_key=s3.secret_access_key,
        endpoint_override=s3.endpoint,
        region="us-east-1",
        scheme="http",
    )
    found = bucket.get_file_info(fs.FileSelector(f"{s3.bucket}/{prefix}", recursive=True, allow_not_found=True))
    return sorted(info.path.split(f"{prefix}/", 1)[1] for info in found if info.type == fs.FileType.File)


def test_checkpoints_live_in_s3_and_a_retry_on_a_wiped_node_resumes_from_there(
    s3_plane: tuple[ControlPlane, S3Emulator],
) -> None:
    plane, s3 = s3_plane
    job_id = plane.add_job(with_steps(60, 10), max_retries=2)
    first = plane.wait_for(job_id, lambda job: bool(job.attempts)).attempts[0]
    plane.wait_for(job_id, lambda _: (p := progress(plane, first.id)) and (p.last_checkpoint_step or 0) >= 20)
    run_name = plane.job(job_id).run_dir_name
    keys = bucket_keys(s3, f"runs/{run_name}")
    assert "checkpoints/last.json" in keys and any(key.endswith(".pt") for key in keys)
    assert not list(plane.settings.data_dir.rglob("*.pt")), "the API's data dir holds no checkpoint"

    os.kill(wait_until(lambda: worker_pid(first.id)), signal.SIGKILL)
    shutil.rmtree(scratch_root() / run_name)  # the retry finds no local copy: it must restore from S3

    job = plane.wait_for(job_id, lambda job: job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED), 300)
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [a.status for a in job.attempts] == [AttemptStatus.FAILED, AttemptStatus.SUCCEEDED]
    assert progress(plane, job.attempts[1].id).run_info["start_step"] >= 20
    assert steps_of(plane, job_id, "train/loss") == list(range(1, 61))
    history = MlflowClient(plane.settings.resolved_mlflow_uri).get_metric_history(job.mlflow_run_id, "train/loss")
    assert sorted(point.step for point in history) == list(range(1, 61))


def test_storage_the_workers_cannot_reach_fails_the_attempt_naming_the_uri(
    s3_plane: tuple[ControlPlane, S3Emulator],
) -> None:
    plane, _ = s3_plane
    plane.settings = Settings(**{**plane.settings.model_dump(), "storage_uri": "s3://no-such-bucket/runs"})
    job_id = plane.add_job(with_steps(20, 10), max_retries=0)
    job = plane.wait_for(job_id, lambda job: job.status == JobStatus.FAILED, 180)
    assert f"run storage s3://no-such-bucket/runs/{job.run_dir_name}" in job.error
    assert "Traceback" not in job.error
    assert steps_of(plane, job_id, "train/loss") == []  # nothing written before the storage answered
