"""The run page states the collapse alarm's rule with the run's own numbers, and M-MAE's mu in both conventions.

A service without a scheduler (no Ray, no training): the test writes the rows a worker's reporter writes
(progress with its run info, effective-rank points) for two finished runs and reads their run pages in
headless Chromium. The values are those real runs reported: examples/mmae.yaml (every 50th step), and the
huge-learning-rate MAE run of tests/service/test_collapse_alarm.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, update

from service.store.models import Job
from tests.web.conftest import DESKTOP, REPO, Service, free_port, login, open_page, wait_until_healthy
from workers.tables import attempt_progress, metric_points

pytestmark = [pytest.mark.browser]

MMAE_EXAMPLE = yaml.safe_load((REPO / "examples" / "mmae.yaml").read_text())
MMAE_SERIES = {
    "info/erank": [1.66, 1.77, 2.51, 5.19, 15.48, 19.55],
    "info/erank_centered": [15.39, 14.18, 13.13, 16.73, 23.94, 27.6],
}
COLLAPSED = {
    "method": "mae",
    "steps": 6,
    "data": {"batch_size": 64},
    "model": {"depth": 1, "decoder_dim": 32, "decoder_depth": 1},
    "optim": {"lr": 10.0, "warmup_steps": 0},
}
COLLAPSED_SERIES = {"info/erank": [2.53, 1.05], "info/erank_centered": [2.58, 1.66]}


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`uvicorn --factory service.api.main:create_app` that never schedules: jobs stay where the test puts them."""
    data_dir = tmp_path_factory.mktemp("run-page-service")
    log = data_dir / "server.log"
    port = free_port()
    env = {**os.environ, "MMAE_DATA_DIR": str(data_dir), "MMAE_RUN_SCHEDULER": "false"}
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.api.main:create_app", "--port", str(port)]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, Service(url=url, token="", data_dir=data_dir, log=log), needs=("database",))
        token = (data_dir / "admin-token").read_text().strip()
        yield Service(url=url, token=token, data_dir=data_dir, log=log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def finished_run(
    service: Service, config: dict[str, Any], feature_dim: int, series: dict[str, list[float]], every: int
) -> int:
    """A succeeded job whose monitor measured [batch, feature_dim] features: ``series`` every ``every`` steps."""
    with service.api() as client:
        job_id = client.post("/api/jobs", json={"config": config}).json()["id"]
    engine = create_engine(f"sqlite:///{service.data_dir / 'mmae.db'}")
    now = datetime.now(UTC)
    steps = every * max(len(values) for values in series.values())
    batch = config["data"]["batch_size"]
    run_info = {"total_steps": steps, "start_step": 0, "feature_dim": feature_dim, "batch_size": batch}
    points = [
        {
            "job_id": job_id,
            "name": name,
            "step": every * (i + 1),
            "value": value,
            "attempt_id": job_id,
            "logged_at": now,
        }
        for name, values in series.items()
        for i, value in enumerate(values)
    ]
    with engine.begin() as connection:
        connection.execute(update(Job).where(Job.id == job_id).values(status="succeeded"))
        connection.execute(
            attempt_progress.insert().values(
                attempt_id=job_id,
                job_id=job_id,
                step=steps,
                total_steps=steps,
                phase="done",
                run_info=run_info,
                heartbeat_at=now,
            )
        )
        connection.execute(metric_points.insert(), points)
    engine.dispose()
    return job_id


def fact(page: Any, term: str) -> str:
    return page.inner_text(f".facts div:has(> dt:text-is('{term}')) dd")


def test_run_pages_state_the_alarm_rule_and_both_mu_conventions(
    browser: Any, service: Service, screenshots: Path
) -> None:
    healthy = finished_run(service, MMAE_EXAMPLE, 192, MMAE_SERIES, every=50)
    collapsed = finished_run(service, COLLAPSED, 192, COLLAPSED_SERIES, every=3)
    context, page, record = open_page(browser, service, DESKTOP)
    login(page, service)

    page.goto(f"{service.url}/#/runs/{healthy}")
    page.wait_for_selector("[data-collapse-rule]")
    assert fact(page, "Collapse alarm") == (
        "not raised; fires if the centred effective rank is below 7.68 = 4% of min(B − 1, d) = min(255, 192)"
    )
    assert fact(page, "Effective rank") == "19.55 (Def. 5.1) · 27.6 centred"
    assert fact(page, "TCR mu") == "1 (official, logdet(I + (μ/d) ZᵀZ)) = 192 in the Def. 4.8 convention (d = 192)"
    assert page.locator(".notice.warning").count() == 0
    page.screenshot(path=str(screenshots / "run-alarm-not-raised.png"), full_page=True)

    page.goto(f"{service.url}/#/runs/{collapsed}")
    page.wait_for_selector(".notice.warning")
    assert page.inner_text(".notice.warning").startswith(
        "Representation collapse. Centred effective rank 1.66 is below 2.52 = 4% of min(B − 1, d) = min(63, 192)"
    )
    assert fact(page, "Collapse alarm") == (
        "raised: centred effective rank below 2.52 = 4% of min(B − 1, d) = min(63, 192)"
    )
    assert page.locator("dt:text-is('TCR mu')").count() == 0  # MAE has no TCR
    page.screenshot(path=str(screenshots / "run-alarm-raised.png"), full_page=True)
    record.check()
    context.close()
