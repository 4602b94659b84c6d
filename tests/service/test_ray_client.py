"""The Ray adapter against the session's real head: reuse by address, resources, unknown ids, auth."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from service.cluster import ray_head
from service.cluster.ray_client import RayJobsClient, RayUnavailable
from service.settings import Settings
from tests.conftest import spec_with
from workers.spec import Scaling


@pytest.mark.ray
def test_a_running_head_is_reused_not_restarted(ray_cluster: str, tmp_path: Path) -> None:
    pid_before = (ray_head.head_dir(ray_cluster) / "head.pid").read_text()
    client = RayJobsClient(ray_cluster, start_local=True, stop_grace_s=10)  # an API process that restarted
    client.connect()
    assert client.connected and client.is_available()
    assert (ray_head.head_dir(ray_cluster) / "head.pid").read_text() == pid_before
    resources = client.cluster_resources()
    assert resources.total["CPU"] == 4.0 and resources.total.get("GPU", 0.0) == 0.0
    assert [node["is_head"] for node in resources.nodes] == [True]
    assert resources.largest("CPU") == 4.0 and resources.largest("GPU") == 0.0
    assert client.status("mmae-attempt-unknown") is None
    assert client.logs("mmae-attempt-unknown") == ""


@pytest.mark.ray
def test_only_a_one_worker_entrypoint_asks_ray_for_the_workers_resources(ray_cluster: str, tmp_path: Path) -> None:
    """On a 4-CPU head, an entrypoint asking for 64 CPUs waits in PENDING; a multi-worker attempt's
    entrypoint asks for none (its Ray Train workers hold the resources), so Ray starts it at once."""
    client = RayJobsClient(ray_cluster, start_local=False, stop_grace_s=1)
    suffix = tmp_path.name[-8:]
    trains_itself, coordinates = f"mmae-test-one-{suffix}", f"mmae-test-two-{suffix}"
    client.submit(trains_itself, spec_with(Scaling(workers=1, num_cpus=64)))
    client.submit(coordinates, spec_with(Scaling(workers=2, num_cpus=64)))
    try:
        deadline = time.monotonic() + 60
        while client.status(coordinates).status == "PENDING":
            assert time.monotonic() < deadline, "the coordinating entrypoint never started"
            time.sleep(0.2)
        assert client.status(trains_itself).status == "PENDING"
    finally:
        client.stop(trains_itself)
        client.stop(coordinates)


@pytest.mark.ray
def test_requests_without_the_token_are_refused(ray_cluster: str) -> None:
    import httpx

    assert httpx.get(f"{ray_cluster}/api/version", timeout=5).status_code == 401
    assert ray_head.is_up(ray_cluster)


def test_a_remote_address_is_never_started_and_reports_unavailable() -> None:
    settings = Settings(ray_address="http://ray-head.invalid:8265")
    client = RayJobsClient.from_settings(settings)
    assert not client.start_local and not client.is_available()
    with pytest.raises(RayUnavailable):
        client.connect()


def test_the_local_default_may_start_a_head() -> None:
    client = RayJobsClient.from_settings(Settings())
    assert client.address == "http://127.0.0.1:8265" and client.start_local


def test_a_missing_token_is_generated_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "ray" / "auth_token"))
    assert ray_head.auth_token() is None
    token = ray_head.ensure_auth_token()
    assert len(token) == 64 and ray_head.ensure_auth_token() == token
    assert stat.S_IMODE(os.stat(tmp_path / "ray" / "auth_token").st_mode) == 0o600
    assert ray_head.auth_headers() == {"Authorization": f"Bearer {token}"}
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-the-environment")
    assert ray_head.auth_token() == "from-the-environment"


@pytest.mark.ray
def test_stopping_a_head_stops_its_jobs_first_so_no_process_outlives_it(tmp_path: Path) -> None:
    import sys

    import httpx

    pid_file = tmp_path / "job.pid"
    entrypoint = (
        f"{sys.executable} -c \"import os, time; open('{pid_file}', 'w').write(str(os.getpid())); time.sleep(600)\""
    )
    with ray_head.temporary_head(tmp_path / "token", num_cpus=1, num_gpus=0) as address:
        response = httpx.post(
            f"{address}/api/jobs/", json={"entrypoint": entrypoint}, headers=ray_head.auth_headers(), timeout=30
        )
        assert response.status_code == 200, response.text
        deadline = time.monotonic() + 60
        while not pid_file.is_file() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.2)
        pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
