"""End-to-end fixtures: the whole control plane (API + scheduler) on the session's Ray head, a SQLite
database and the session's MLflow store, driven over REST."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.auth import ADMIN_TOKEN_FILE
from service.settings import Settings
from tests.tiny_config import tiny

# The shared tiny run, 30 steps on the CPU: a few seconds of training per job.
TINY: dict[str, Any] = tiny(steps=30, device="cpu")


@pytest.fixture
def e2e_settings(tmp_path: Path, ray_cluster: str, mlflow_store: str, request: pytest.FixtureRequest) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'mmae.db'}",
        ray_address=ray_cluster,
        mlflow_tracking_uri=mlflow_store,
        mlflow_experiment=f"e2e-{request.node.name}",
        scheduler_interval_s=0.2,
        reconcile_interval_s=0.5,
        stop_grace_s=8,
    )


@pytest.fixture
def api(e2e_settings: Settings) -> Iterator[TestClient]:
    """The app with its scheduler loop running, authenticated with the first-start admin token."""
    with TestClient(create_app(e2e_settings)) as client:
        token = (e2e_settings.data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        client.headers["Authorization"] = f"Bearer {token}"
        yield client
        for job in client.get("/api/jobs", params={"status": ["queued", "starting", "running"]}).json()["items"]:
            client.post(f"/api/jobs/{job['id']}/cancel")


def wait_until(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float = 240.0
) -> dict[str, Any]:
    """Poll ``read()`` every 0.25 s until ``done`` holds; fail with the last value on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = read()
        if done(value):
            return value
        assert time.monotonic() < deadline, f"timed out; last state: {value}"
        time.sleep(0.25)
