"""The default CPU allocation (``num_cpus: auto``): a lone CPU job gets its node's cores, a GPU job a fixed
number per GPU, a number is kept; resolved when a job or sweep is submitted, a 503 when that needs an
unreachable cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.cluster import ray_head
from service.cluster.ray_client import RayJobsClient
from service.scheduling import allocation
from service.schemas import Resources

CPU_NODE, SMALL_NODE = {"CPU": 16.0}, {"CPU": 4.0}
GPU_NODE = {"CPU": 6.0, "GPU": 2.0}


@pytest.mark.parametrize(
    ("request_fields", "nodes", "num_cpus"),
    [
        ({}, [SMALL_NODE, CPU_NODE], 16.0),  # the largest node, whole
        ({"workers": 4}, [CPU_NODE], 4.0),  # split over the workers, so all fit on that node
        ({"workers": 32}, [SMALL_NODE], 1.0),  # never below one
        ({"num_gpus": 1}, [CPU_NODE, GPU_NODE], 4.0),  # CPUS_PER_GPU per GPU
        ({"num_gpus": 2}, [CPU_NODE, GPU_NODE], 6.0),  # capped by what the GPU node has
        ({"num_gpus": 0.5}, [GPU_NODE], 2.0),
        ({"num_cpus": 3}, [CPU_NODE], 3.0),  # a number is kept
        ({}, [], 1.0),  # no node reported yet
    ],
)
def test_auto_resolves_per_job_shape(request_fields: dict[str, Any], nodes: list[dict], num_cpus: float) -> None:
    resolved = allocation.resolve(Resources.model_validate(request_fields), nodes)
    assert resolved.num_cpus == num_cpus
    assert resolved.model_dump(exclude={"num_cpus"}) == Resources.model_validate(request_fields).model_dump(
        exclude={"num_cpus"}
    )


@pytest.mark.parametrize(("cpu_max", "expected"), [("max 100000", None), ("150000 100000", 1), ("", None)])
def test_local_cpus_follow_a_cgroup_quota(
    cpu_max: str, expected: int | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "cpu.max").write_text(cpu_max)
    monkeypatch.setattr(ray_head, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.setattr(ray_head.os, "sched_getaffinity", lambda pid: set(range(8)))
    assert ray_head.local_cpus() == (8 if expected is None else expected)


def test_a_default_job_gets_the_local_head_s_cpus(
    client: TestClient, submit: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(RayJobsClient, "is_available", lambda self: False)  # the local head is not started yet
    assert submit()["resources"]["num_cpus"] == ray_head.local_cpus()
    assert submit(resources={"num_cpus": 2})["resources"]["num_cpus"] == 2.0
    sweep = client.post(
        "/api/sweeps",
        json={"name": "auto-cells", "base_config": {"steps": 10}, "parameters": {"loss.mu": {"values": [1, 3]}}},
    )
    assert sweep.status_code == 201, sweep.text
    cells = [job for job in client.get("/api/jobs").json()["items"] if job["name"].startswith("auto-cells/")]
    assert [cell["resources"]["num_cpus"] for cell in cells] == [float(ray_head.local_cpus())] * 2


def test_auto_with_an_unreachable_remote_cluster_is_a_503_naming_the_field(client: TestClient) -> None:
    ray: RayJobsClient = client.app.state.ray
    ray.address, ray.start_local = "http://127.0.0.1:9", False  # nothing listens on the discard port
    response = client.post("/api/jobs", json={"config": {"steps": 10}})
    assert response.status_code == 503
    assert "resources.num_cpus" in response.json()["detail"]
    assert client.post("/api/jobs", json={"config": {"steps": 10}, "resources": {"num_cpus": 1}}).status_code == 201
