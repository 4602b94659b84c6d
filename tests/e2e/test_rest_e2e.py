"""The control plane end to end over REST: a digits M-MAE job, a 3-cell mu sweep, cancel within 10 s,
and an API process killed mid-run (the job still finishes, recorded once)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient

from service.auth import ADMIN_TOKEN_FILE
from service.settings import Settings
from service.store.states import TERMINAL
from tests.e2e.conftest import TINY, wait_until

pytestmark = [pytest.mark.ray, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def job_of(client: TestClient | httpx.Client, job_id: int) -> dict[str, Any]:
    response = client.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return response.json()


def test_digits_mmae_job_over_rest_succeeds_with_metrics_in_sql_and_mlflow(
    api: TestClient, e2e_settings: Settings
) -> None:
    created = api.post("/api/jobs", json={"name": "digits-mmae", "config": TINY})
    assert created.status_code == 201, created.text
    job = wait_until(lambda: job_of(api, created.json()["id"]), lambda j: j["status"] in TERMINAL)
    assert job["status"] == "succeeded", job["error"]
    assert len(job["attempts"]) == 1 and job["attempts"][0]["status"] == "succeeded"
    assert job["progress"]["phase"] == "done" and job["progress"]["step"] >= 29
    assert 0.0 <= job["summary"]["eval/linear_top1"] <= 1.0 and "eval/knn_top1" in job["summary"]
    assert job["collapse"]["feature_dim"] and job["collapse"]["erank"] is not None

    names = api.get(f"/api/jobs/{job['id']}/metrics/names").json()
    assert {"train/loss", "train/tcr", "info/erank", "eval/linear_top1"} <= set(names)
    series = api.get(f"/api/jobs/{job['id']}/metrics", params={"max_points": 100_000}).json()["series"]
    loss_steps = series["train/loss"]["steps"]
    assert len(loss_steps) == 30 and len(set(loss_steps)) == 30

    mlflow = MlflowClient(e2e_settings.resolved_mlflow_uri)
    closed = wait_until(
        lambda: mlflow.get_run(job["mlflow_run_id"]).to_dictionary()["info"],
        lambda info: info["status"] != "RUNNING",
        30,
    )  # the MLflow thread's next pass
    assert closed["status"] == "FINISHED"
    run = mlflow.get_run(job["mlflow_run_id"])
    assert run.data.params["loss.mu"] == "1.0" and run.data.tags["config_hash"] == job["config_hash"]
    history = mlflow.get_metric_history(job["mlflow_run_id"], "train/loss")
    assert sorted(point.step for point in history) == sorted(loss_steps)
    assert run.data.metrics["eval/linear_top1"] == pytest.approx(job["summary"]["eval/linear_top1"])
    assert any(line.startswith("[mmae]") for line in api.get(f"/api/jobs/{job['id']}/logs").json()["lines"])


def test_three_cell_mu_sweep_makes_three_mlflow_children_under_one_parent(
    api: TestClient, e2e_settings: Settings
) -> None:
    body = {"name": "mu", "base_config": TINY, "parameters": {"loss.mu": {"values": [0.5, 1, 3]}}}
    sweep = api.post("/api/sweeps", json=body).json()
    done = wait_until(
        lambda: api.get(f"/api/sweeps/{sweep['id']}").json(),
        lambda s: sum(s["counts"].get(status, 0) for status in TERMINAL) == 3,
        timeout_s=360,
    )
    assert done["counts"] == {"succeeded": 3}
    table = api.get(f"/api/sweeps/{sweep['id']}/table").json()
    assert sorted(row["params"]["loss.mu"] for row in table["rows"]) == [0.5, 1.0, 3.0]
    assert all("eval/linear_top1" in row["metrics"] for row in table["rows"])

    mlflow = MlflowClient(e2e_settings.resolved_mlflow_uri)
    parent = done["mlflow_parent_run_id"]
    experiment = mlflow.get_experiment_by_name(e2e_settings.mlflow_experiment)
    children = mlflow.search_runs([experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{parent}'")
    assert len(children) == 3
    assert sorted(float(run.data.params["loss.mu"]) for run in children) == [0.5, 1.0, 3.0]
    closed = wait_until(
        lambda: mlflow.get_run(parent).to_dictionary()["info"], lambda info: info["status"] != "RUNNING", 30
    )  # the MLflow thread's next pass
    assert closed["status"] == "FINISHED"
    assert api.post("/api/sweeps", json=body).json()["id"] == sweep["id"], "resubmission is idempotent"


def test_cancel_stops_a_running_job_within_10_seconds(api: TestClient, e2e_settings: Settings) -> None:
    created = api.post("/api/jobs", json={"config": TINY | {"steps": 100_000, "checkpoint_every": 100_000}}).json()
    wait_until(lambda: job_of(api, created["id"]), lambda j: j["status"] == "running" and j["progress"]["step"] > 2)
    started = time.monotonic()
    response = api.post(f"/api/jobs/{created['id']}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelling"
    job = wait_until(lambda: job_of(api, created["id"]), lambda j: j["status"] in TERMINAL, timeout_s=30)
    elapsed = time.monotonic() - started
    assert job["status"] == "cancelled" and elapsed <= 10.0, (job["status"], elapsed)
    assert job["attempts"][-1]["status"] == "stopped"
    (run_dir,) = e2e_settings.runs_dir.glob(f"job-{job['id']}-*")
    assert (run_dir / "checkpoints").is_dir(), "the trainer checkpointed before stopping"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_api(settings: Settings, port: int, log: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "MMAE_DATA_DIR": str(settings.data_dir),
        "MMAE_DATABASE_URL": settings.resolved_database_url,
        "MMAE_RAY_ADDRESS": str(settings.ray_address),
        "MLFLOW_TRACKING_URI": settings.resolved_mlflow_uri,
        "MMAE_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
        "MMAE_SCHEDULER_INTERVAL_S": "0.2",
        "MMAE_RECONCILE_INTERVAL_S": "0.5",
    }
    with open(log, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)


def test_killing_the_api_mid_run_loses_nothing_and_records_the_job_once(e2e_settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "api.log"
    process = start_api(e2e_settings, port, log)
    token = (e2e_settings.data_dir / ADMIN_TOKEN_FILE).read_text().strip()
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"})
    try:
        config = TINY | {"steps": 150, "checkpoint_every": 50}
        job_id = client.post("/api/jobs", json={"name": "survivor", "config": config}).json()["id"]
        wait_until(lambda: job_of(client, job_id), lambda j: j["status"] == "running" and j["progress"]["step"] > 5)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        time.sleep(2)
        process = start_api(e2e_settings, port, log)
        job = wait_until(lambda: job_of(client, job_id), lambda j: j["status"] in TERMINAL)
        series = client.get(f"/api/jobs/{job_id}/metrics", params={"names": "train/loss", "max_points": 100_000})
    finally:
        process.terminate()
        process.wait(timeout=30)
        client.close()
    assert job["status"] == "succeeded", (job["error"], log.read_text()[-3000:])
    assert len(job["attempts"]) == 1 and job["retries_used"] == 0, "the running attempt was adopted, not redone"
    loss_steps = series.json()["series"]["train/loss"]["steps"]
    assert loss_steps == list(range(loss_steps[0], loss_steps[0] + 150)), "every step once in SQL"
    mlflow = MlflowClient(e2e_settings.resolved_mlflow_uri)
    experiment = mlflow.get_experiment_by_name(e2e_settings.mlflow_experiment)
    assert len(mlflow.search_runs([experiment.experiment_id])) == 1, "one MLflow run for the one job"
    steps = Counter(point.step for point in mlflow.get_metric_history(job["mlflow_run_id"], "train/loss"))
    assert len(steps) == 150 and max(steps.values()) == 1, "every step once in MLflow"


def test_cli_submit_wait_follows_a_job_to_success(e2e_settings: Settings, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "api.log"
    process = start_api(e2e_settings, port, log)
    job_file = tmp_path / "digits.yaml"
    job_file.write_text(yaml.safe_dump(TINY))
    env = {
        **os.environ,
        "MMAE_API_URL": f"http://127.0.0.1:{port}",
        "MMAE_DATA_DIR": str(e2e_settings.data_dir),
    }
    env.pop("MMAE_TOKEN", None)  # the CLI falls back to data_dir/admin-token
    try:
        done = subprocess.run(
            [sys.executable, "-m", "service.cli", "submit", str(job_file), "--wait"],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert done.returncode == 0, (done.stdout, done.stderr)
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "job 1 queued: digits" and lines[-1].startswith("job 1 succeeded: eval/")
    assert "step" in done.stderr, "a progress bar on stderr"
