"""Sweeps over REST: grid and random expansion, idempotent resubmission, the table, retry-failed."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from service.store.db import session_scope
from service.store.models import AttemptProgress, Job
from tests.tiny_config import TINY

MU_SWEEP: dict[str, Any] = {
    "name": "mu",
    "base_config": TINY,
    "parameters": {"loss.mu": {"values": [0.5, 1, 3]}},
}


def cells(client: TestClient, sweep_id: int) -> list[dict[str, Any]]:
    return client.get("/api/jobs", params={"sweep_id": sweep_id, "sort": "created_at"}).json()["items"]


def set_status(client: TestClient, job_id: int, status: str, **values: Any) -> None:
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(status=status, **values))


def test_grid_sweep_makes_one_job_per_cell(client: TestClient) -> None:
    response = client.post("/api/sweeps", json=MU_SWEEP | {"max_concurrency": 2, "tags": ["abl"], "priority": 3})
    assert response.status_code == 201, response.text
    sweep = response.json()
    assert sweep["total"] == 3 and sweep["counts"] == {"queued": 3}
    assert sweep["strategy"] == "grid" and sweep["max_concurrency"] == 2
    assert sweep["parameters"] == {"loss.mu": {"values": [0.5, 1, 3]}}
    jobs = cells(client, sweep["id"])
    assert [job["cell_params"] for job in jobs] == [{"loss.mu": 0.5}, {"loss.mu": 1.0}, {"loss.mu": 3.0}]
    assert [job["params"]["loss.mu"] for job in jobs] == [0.5, 1.0, 3.0]
    assert {job["sweep_id"] for job in jobs} == {sweep["id"]}
    assert all(job["priority"] == 3 and job["tags"] == ["abl"] for job in jobs)
    assert jobs[0]["name"] == "mu/mu=0.5"
    assert len({job["config_hash"] for job in jobs}) == 3


def test_grid_is_the_cartesian_product_and_duplicates_collapse(client: TestClient) -> None:
    body = MU_SWEEP | {"parameters": {"loss.mu": {"values": [1, 1.0, 3]}, "optim.lr": {"values": [0.001, 0.01]}}}
    sweep = client.post("/api/sweeps", json=body).json()
    assert sweep["total"] == 4
    params = [job["cell_params"] for job in cells(client, sweep["id"])]
    assert params == [
        {"loss.mu": 1.0, "optim.lr": 0.001},
        {"loss.mu": 1.0, "optim.lr": 0.01},
        {"loss.mu": 3.0, "optim.lr": 0.001},
        {"loss.mu": 3.0, "optim.lr": 0.01},
    ]


def test_random_sweep_draws_within_the_distribution_reproducibly(client: TestClient) -> None:
    body = {
        "name": "rand",
        "base_config": TINY,
        "strategy": "random",
        "num_samples": 6,
        "seed": 7,
        "parameters": {
            "loss.mu": {"distribution": "log_uniform", "low": 0.1, "high": 10},
            "loss.tcr_lambda": {"distribution": "uniform", "low": 0.0, "high": 0.1},
            "model.depth": {"distribution": "int_uniform", "low": 1, "high": 2},
            "loss.mu_convention": {"values": ["paper", "official"]},
        },
    }
    first = client.post("/api/sweeps", json=body)
    assert first.status_code == 201
    jobs = cells(client, first.json()["id"])
    assert len(jobs) == 6
    for job in jobs:
        params = job["cell_params"]
        assert 0.1 <= params["loss.mu"] <= 10 and 0 <= params["loss.tcr_lambda"] <= 0.1
        assert params["model.depth"] in (1, 2) and params["loss.mu_convention"] in ("paper", "official")
    again = client.post("/api/sweeps", json=body)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], "same seed -> same cells"
    other = client.post("/api/sweeps", json=body | {"seed": 8})
    assert other.status_code == 201


def test_resubmitting_the_same_sweep_is_idempotent(client: TestClient) -> None:
    first = client.post("/api/sweeps", json=MU_SWEEP)
    again = client.post("/api/sweeps", json=MU_SWEEP | {"parameters": {"loss.mu": {"values": [3, 1.0, 0.5]}}})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    renamed = client.post("/api/sweeps", json=MU_SWEEP | {"name": "mu-2"})
    grown = client.post("/api/sweeps", json=MU_SWEEP | {"parameters": {"loss.mu": {"values": [0.5, 1, 3, 10]}}})
    assert (renamed.status_code, grown.status_code) == (201, 201)
    assert client.get("/api/jobs").json()["total"] == 3 + 3 + 4


def test_idempotency_key_on_sweeps(client: TestClient) -> None:
    headers = {"Idempotency-Key": "sweep-1"}
    first = client.post("/api/sweeps", json=MU_SWEEP, headers=headers)
    again = client.post("/api/sweeps", json=MU_SWEEP, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["id"] == first.json()["id"]
    renamed = client.post("/api/sweeps", json=MU_SWEEP | {"name": "renamed"}, headers=headers)
    assert renamed.status_code == 409, "a key replayed with a different request is refused, not answered silently"


@pytest.mark.parametrize(
    ("parameters", "extra", "loc", "reason"),
    [
        (
            {"loss.muu": {"values": [1]}},
            {},
            ["body", "parameters", "loss.muu"],
            "unknown config field 'loss.muu'",
        ),
        ({"loss": {"values": [1]}}, {}, ["body", "parameters", "loss"], "unknown config field 'loss'"),
        ({"loss.mu.x": {"values": [1]}}, {}, ["body", "parameters", "loss.mu.x"], "unknown config field"),
        ({"Loss.Mu": {"values": [1]}}, {}, ["body", "parameters", "Loss.Mu", "[key]"], "match pattern"),
        (
            {"loss.mu": {"values": [-1, 1]}},
            {},
            ["body", "parameters", "loss.mu"],
            "value -1: Input should be greater",
        ),
        ({"loss.mu": {"values": ["x"]}}, {}, ["body", "parameters", "loss.mu"], "valid number"),
        (
            {"loss.mu": {"values": []}},
            {},
            ["body", "parameters", "loss.mu", "values", "values"],
            "at least 1",
        ),
        (
            {"loss.mu": {"distribution": "uniform", "low": 0.1, "high": 1}},
            {},
            ["body", "parameters", "loss.mu"],
            "grid sweeps need a 'values' list",
        ),
        (
            {"loss.mu": {"distribution": "normal", "low": 0, "high": 1}},
            {"strategy": "random", "num_samples": 2},
            ["body", "parameters", "loss.mu", "distribution", "distribution"],
            "'uniform'",
        ),
        (
            {"loss.mu": {"distribution": "uniform", "low": 2, "high": 1}},
            {"strategy": "random", "num_samples": 2},
            ["body", "parameters", "loss.mu", "distribution"],
            "low must be smaller than high",
        ),
        (
            {"loss.mu": {"distribution": "uniform", "low": 0.1, "high": 1}},
            {"strategy": "random"},
            ["body", "num_samples"],
            "num_samples is required",
        ),
        ({"model.patch_size": {"values": [3]}}, {}, ["body", "parameters"], "must divide the image size"),
        ({}, {}, ["body", "parameters"], "at least 1 item"),
        ({"loss.mu": {"values": [1]}}, {"strategy": "bayes"}, ["body", "strategy"], "'grid' or 'random'"),
        (
            {"loss.mu": {"values": [1]}},
            {"base_config": {"loss": {"mu": -2}}},
            ["body", "base_config", "loss", "mu"],
            "greater than 0",
        ),
        ({"loss.mu": {"values": [1]}}, {"max_concurrency": 0}, ["body", "max_concurrency"], "greater than"),
        (
            {
                "optim.lr": {"values": list(range(1, 101))},
                "loss.mu": {"values": list(range(1, 102))},
                "seed": {"values": [1, 2]},
            },
            {},
            ["body", "parameters"],
            "at most 1000 cells",
        ),
    ],
)
def test_bad_sweeps_name_the_parameter(
    client: TestClient, parameters: dict[str, Any], extra: dict[str, Any], loc: list[str], reason: str
) -> None:
    response = client.post("/api/sweeps", json=MU_SWEEP | {"parameters": parameters} | extra)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail[0]["loc"] == loc, detail
    assert reason in detail[0]["msg"], detail
    assert client.get("/api/jobs").json()["total"] == 0, "nothing is created from a bad sweep"


def test_sweep_list_read_and_404(client: TestClient) -> None:
    a = client.post("/api/sweeps", json=MU_SWEEP).json()
    b = client.post("/api/sweeps", json=MU_SWEEP | {"name": "other"}).json()
    page = client.get("/api/sweeps").json()
    assert page["total"] == 2 and [s["id"] for s in page["items"]] == [b["id"], a["id"]]
    assert client.get("/api/sweeps", params={"limit": 1, "offset": 1}).json()["items"][0]["id"] == a["id"]
    assert client.get(f"/api/sweeps/{a['id']}").json() == a
    for path in ("/api/sweeps/999", "/api/sweeps/999/table"):
        assert client.get(path).json() == {"detail": "sweep 999 not found"}
    assert client.post("/api/sweeps/999/retry-failed").status_code == 404


def test_sweep_table_shows_params_status_progress_and_metrics(client: TestClient) -> None:
    sweep = client.post("/api/sweeps", json=MU_SWEEP).json()
    done, running, queued = cells(client, sweep["id"])
    set_status(client, done["id"], "succeeded", summary={"eval/linear_top1": 0.8, "train/loss": 0.3})
    set_status(client, running["id"], "running")
    with session_scope(client.app.state.session_factory) as session:
        session.add(
            AttemptProgress(
                attempt_id=77,
                job_id=running["id"],
                step=12,
                total_steps=30,
                phase="training",
                heartbeat_at=datetime.now(UTC),
            )
        )
    table = client.get(f"/api/sweeps/{sweep['id']}/table").json()
    assert table["parameters"] == ["loss.mu"]
    assert table["metrics"] == ["eval/linear_top1", "train/loss"]
    rows = {row["job_id"]: row for row in table["rows"]}
    assert rows[done["id"]]["metrics"] == {"eval/linear_top1": 0.8, "train/loss": 0.3}
    assert rows[done["id"]]["params"] == {"loss.mu": 0.5} and rows[done["id"]]["status"] == "succeeded"
    assert rows[running["id"]]["progress"] == {"step": 12, "total_steps": 30, "phase": "training"}
    assert rows[queued["id"]]["metrics"] == {} and rows[queued["id"]]["status"] == "queued"
    counts = client.get(f"/api/sweeps/{sweep['id']}").json()["counts"]
    assert counts == {"succeeded": 1, "running": 1, "queued": 1}


def test_retry_failed_requeues_only_failed_and_cancelled_cells(client: TestClient) -> None:
    body = MU_SWEEP | {"parameters": {"loss.mu": {"values": [0.5, 1, 2, 3, 4]}}}
    sweep = client.post("/api/sweeps", json=body).json()
    jobs = cells(client, sweep["id"])
    statuses = ["failed", "cancelled", "succeeded", "running", "queued"]
    for job, status in zip(jobs, statuses, strict=True):
        set_status(client, job["id"], status, error="boom" if status == "failed" else None, retries_used=2)
    response = client.post(f"/api/sweeps/{sweep['id']}/retry-failed")
    assert response.status_code == 200
    assert response.json() == {"retried": [jobs[0]["id"], jobs[1]["id"]]}
    after = {job["id"]: job for job in cells(client, sweep["id"])}
    assert [after[job["id"]]["status"] for job in jobs] == [
        "queued",
        "queued",
        "succeeded",
        "running",
        "queued",
    ]
    assert after[jobs[0]["id"]]["error"] is None and after[jobs[0]["id"]]["retries_used"] == 0
    assert client.post(f"/api/sweeps/{sweep['id']}/retry-failed").json() == {"retried": []}


def test_job_retry_and_cancel_follow_the_state_machine(client: TestClient) -> None:
    sweep = client.post("/api/sweeps", json=MU_SWEEP).json()
    first, second, _ = cells(client, sweep["id"])
    response = client.post(f"/api/jobs/{first['id']}/retry")
    assert response.status_code == 409 and "only failed or cancelled" in response.json()["detail"]
    cancelled = client.post(f"/api/jobs/{first['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    assert client.post(f"/api/jobs/{first['id']}/cancel").status_code == 409
    retried = client.post(f"/api/jobs/{first['id']}/retry")
    assert retried.status_code == 202 and retried.json()["status"] == "queued"
    set_status(client, second["id"], "succeeded")
    assert client.post(f"/api/jobs/{second['id']}/retry").status_code == 409
