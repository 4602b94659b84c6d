"""A data-parallel job end to end: two Ray Train workers on two Ray nodes (the session's head and a
second node on loopback), through the REST API, with one series in SQL and MLflow; and the loss of the
second node mid-run, which the service survives by retrying from the last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
from collections import Counter
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from service.cluster.ray_head import auth_headers
from service.settings import Settings
from service.store.states import TERMINAL
from tests.e2e.conftest import TINY, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TWO_WORKERS = {"workers": 2, "num_cpus": 1, "placement": "spread"}


def config(steps: int) -> dict[str, Any]:
    return TINY | {"steps": steps}


def job_of(api: TestClient, job_id: int) -> dict[str, Any]:
    return api.get(f"/api/jobs/{job_id}").json()


def train_worker_nodes(address: str) -> set[str]:
    """Node ids of the live Ray Train worker actors on the cluster."""
    response = httpx.get(
        f"{address}/api/v0/actors",
        headers=auth_headers(),
        timeout=10,
        params={"filter_keys": "class_name", "filter_predicates": "=", "filter_values": "RayTrainWorker"},
    )
    rows = response.json()["data"]["result"]["result"]
    return {row["node_id"] for row in rows if row["state"] == "ALIVE"}


def one_series(api: TestClient, settings: Settings, job: dict[str, Any], steps: int) -> None:
    """Every train/loss step exactly once, in SQL and in MLflow."""
    series = api.get(f"/api/jobs/{job['id']}/metrics", params={"max_points": 100_000}).json()["series"]
    assert series["train/loss"]["steps"] == list(range(1, steps + 1))
    history = MlflowClient(settings.resolved_mlflow_uri).get_metric_history(job["mlflow_run_id"], "train/loss")
    counts = Counter(point.step for point in history)
    assert sorted(counts) == list(range(1, steps + 1)) and max(counts.values()) == 1


def test_a_two_worker_job_spreads_over_two_nodes_and_reports_one_series(
    api: TestClient, e2e_settings: Settings, ray_cluster: str, second_ray_node: subprocess.Popen
) -> None:
    created = api.post("/api/jobs", json={"name": "two-workers", "config": config(40), "resources": TWO_WORKERS})
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    nodes = wait_until(lambda: {"nodes": train_worker_nodes(ray_cluster)}, lambda seen: len(seen["nodes"]) == 2)
    assert len(nodes["nodes"]) == 2, "SPREAD put the two workers on two nodes"
    job = wait_until(lambda: job_of(api, job_id), lambda j: j["status"] in TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    assert job["resources"] == {"num_cpus": 1.0, "num_gpus": 0.0, **TWO_WORKERS}
    one_series(api, e2e_settings, job, 40)
    run = MlflowClient(e2e_settings.resolved_mlflow_uri).get_run(job["mlflow_run_id"])
    assert run.data.tags["world_size"] == "2"
    assert 0.0 <= job["summary"]["eval/linear_top1"] <= 1.0


def test_losing_a_node_mid_run_resumes_from_the_last_checkpoint(
    api: TestClient, e2e_settings: Settings, second_ray_node: subprocess.Popen
) -> None:
    body = {"name": "node-loss", "config": config(80), "resources": TWO_WORKERS, "max_retries": 2}
    job_id = api.post("/api/jobs", json=body).json()["id"]
    wait_until(lambda: job_of(api, job_id), lambda j: j["progress"]["step"] >= 25)  # checkpointed at 20
    os.killpg(second_ray_node.pid, signal.SIGKILL)

    job = wait_until(lambda: job_of(api, job_id), lambda j: j["status"] in TERMINAL, timeout_s=400)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"][0]["status"] == "failed" and job["retries_used"] >= 1
    one_series(api, e2e_settings, job, 80)
