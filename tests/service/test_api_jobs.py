"""Jobs over REST: create (idempotent), read, list with filters, sorting and pagination, 404s."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, update

from mmae.config import TrainConfig, config_hash
from service.store.db import session_scope
from service.store.models import Job
from tests.tiny_config import TINY

Submit = Callable[..., dict[str, Any]]


def set_job(client: TestClient, job_id: int, **values: Any) -> None:
    with session_scope(client.app.state.session_factory) as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


def test_create_returns_the_full_job(submit: Submit) -> None:
    job = submit(name="first", priority=5, tags=["baseline", "mu=1"], resources={"num_cpus": 2, "num_gpus": 0.5})
    assert job["id"] >= 1 and job["name"] == "first" and job["status"] == "queued"
    assert job["method"] == "mmae" and job["priority"] == 5 and job["max_retries"] == 2
    assert job["resources"] == {"num_cpus": 2.0, "num_gpus": 0.5, "workers": 1, "placement": "pack"}
    assert job["tags"] == ["baseline", "mu=1"]
    assert job["config"]["steps"] == TINY["steps"] and job["config"]["loss"]["mu"] == 1.0, "defaults filled in"
    assert len(job["config_hash"]) == 16
    assert job["params"]["loss.mu"] == 1.0 and job["params"]["data.dataset"] == "digits"
    assert job["progress"] == {"step": 0, "total_steps": TINY["steps"], "phase": "queued"}
    assert job["attempts"] == [] and job["summary"] == {}
    assert job["collapse"]["fraction"] == 0.04 and job["collapse"]["collapsed"] is None
    assert job["created_at"].endswith("Z") or job["created_at"].endswith("+00:00")


def test_a_data_parallel_job_stores_and_echoes_its_per_worker_resources(client: TestClient, submit: Submit) -> None:
    resources = {"num_cpus": 2.0, "num_gpus": 1.0, "workers": 4, "placement": "spread"}
    job = submit(resources=resources)
    assert job["resources"] == resources
    assert client.get("/api/jobs").json()["items"][0]["resources"] == resources
    with session_scope(client.app.state.session_factory) as session:
        stored = session.get(Job, job["id"])
        assert (stored.workers, stored.cpus_held, stored.gpus_held, stored.placement) == (4, 8.0, 4.0, "spread")


def test_unnamed_jobs_get_a_descriptive_name(submit: Submit) -> None:
    job = submit()
    assert job["name"] == f"mmae-digits-{job['config_hash'][:6]}"


def test_idempotency_key_returns_the_same_job(client: TestClient) -> None:
    body = {"config": {"steps": 10}}
    first = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
    again = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-123"})
    other = client.post("/api/jobs", json=body, headers={"Idempotency-Key": "abc-124"})
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 201)
    assert first.json()["id"] == again.json()["id"] != other.json()["id"]
    assert client.get("/api/jobs").json()["total"] == 2


def test_read_and_unknown_ids(client: TestClient, submit: Submit) -> None:
    job = submit()
    assert client.get(f"/api/jobs/{job['id']}").json() == job
    for path in (
        "/api/jobs/4242",
        "/api/jobs/4242/metrics",
        "/api/jobs/4242/metrics/names",
        "/api/jobs/4242/logs",
        "/api/jobs/4242/events",
    ):
        response = client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"detail": "job 4242 not found"}
    for path in ("/api/jobs/4242/cancel", "/api/jobs/4242/retry"):
        assert client.post(path).json() == {"detail": "job 4242 not found"}


def test_list_filters(client: TestClient, submit: Submit) -> None:
    a = submit(name="alpha-run", tags=["x"])
    b = submit(name="beta-run", tags=["y", "x"], config={"method": "simclr", "steps": 5})
    c = submit(name="gamma", tags=["y"])
    set_job(client, c["id"], status="failed")

    def ids(**params: Any) -> list[int]:
        page = client.get("/api/jobs", params=params).json()
        assert page["total"] == len(page["items"])
        return sorted(item["id"] for item in page["items"])

    assert ids() == [a["id"], b["id"], c["id"]]
    assert ids(status="failed") == [c["id"]]
    assert ids(status=["queued", "failed"]) == [a["id"], b["id"], c["id"]]
    assert ids(method="simclr") == [b["id"]]
    assert ids(tag="x") == [a["id"], b["id"]]
    assert ids(tag="y", status="queued") == [b["id"]]
    assert ids(q="RUN") == [a["id"], b["id"]]
    assert ids(q="%") == [], "LIKE wildcards are literal"
    assert ids(sweep_id=1) == []


def test_list_sorts_and_paginates(client: TestClient, submit: Submit) -> None:
    jobs = [submit(name=f"job-{i:02d}", priority=i % 3) for i in range(7)]
    for index, job in enumerate(jobs[:4]):
        with session_scope(client.app.state.session_factory) as session:
            stored = session.get(Job, job["id"])
            stored.status = "succeeded"
            stored.record_summary({"eval/linear_top1": [0.5, 0.9, 0.7, 0.1][index]})

    def names(sort: str, **params: Any) -> list[str]:
        return [item["name"] for item in client.get("/api/jobs", params={"sort": sort, **params}).json()["items"]]

    assert names("-created_at") == [f"job-{i:02d}" for i in reversed(range(7))]
    assert names("created_at") == [f"job-{i:02d}" for i in range(7)]
    assert names("name", limit=3) == ["job-00", "job-01", "job-02"]
    assert names("name", limit=3, offset=6) == ["job-06"]
    priorities = [item["priority"] for item in client.get("/api/jobs", params={"sort": "-priority"}).json()["items"]]
    assert priorities == sorted(priorities, reverse=True)
    assert names("-linear_top1")[:4] == ["job-01", "job-02", "job-00", "job-03"], "unevaluated jobs last"
    assert names("linear_top1")[:4] == ["job-03", "job-00", "job-02", "job-01"]
    assert names("status")[0] == "job-04"
    page = client.get("/api/jobs", params={"limit": 2, "offset": 2}).json()
    assert page["total"] == 7 and page["limit"] == 2 and page["offset"] == 2 and len(page["items"]) == 2
    beyond = client.get("/api/jobs", params={"offset": 100}).json()
    assert beyond["items"] == [] and beyond["total"] == 7
    assert client.get("/api/jobs", params={"status": "running"}).json() == {
        "items": [],
        "total": 0,
        "limit": 50,
        "offset": 0,
    }


def test_summary_view_omits_config_and_attempts(client: TestClient, submit: Submit) -> None:
    submit()
    item = client.get("/api/jobs").json()["items"][0]
    assert "config" not in item and "attempts" not in item
    assert item["params"]["loss.mu"] == 1.0


def test_list_costs_a_constant_number_of_queries(client: TestClient, submit: Submit) -> None:
    for _ in range(12):
        submit()
    statements: list[str] = []
    engine = client.app.state.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        client.get("/api/jobs", params={"limit": 2})
        small = len(statements)
        statements.clear()
        client.get("/api/jobs", params={"limit": 12})
        assert len(statements) == small <= 5, statements  # token, page, count, progress, erank
    finally:
        event.remove(engine, "before_cursor_execute", listener)


def test_non_finite_summary_values_come_back_as_null(client: TestClient, submit: Submit, database_url: str) -> None:
    if not database_url.startswith("sqlite"):
        pytest.skip("PostgreSQL's json type refuses NaN outright; only SQLite can hand one back")
    job = submit()
    set_job(client, job["id"], summary={"train/loss": float("nan"), "eval/linear_top1": 0.5})
    assert client.get(f"/api/jobs/{job['id']}").json()["summary"] == {
        "train/loss": None,
        "eval/linear_top1": 0.5,
    }


@pytest.mark.slow
def test_ten_thousand_jobs_page_quickly_and_completely(client: TestClient) -> None:
    config = TrainConfig.model_validate({"steps": 10})
    now = datetime.now(UTC)
    rows = [
        {
            "name": f"bulk-{i:05d}",
            "status": ("succeeded", "failed")[i % 2],
            "method": "mmae",
            "config": config.model_dump(mode="json"),
            "config_hash": config_hash(config),
            "priority": i % 3,
            "max_retries": 2,
            "retries_used": 0,
            "num_cpus": 1.0,
            "num_gpus": 0.0,
            "tags": ["bulk"],
            "created_at": now + timedelta(microseconds=i),
            "queued_at": now,
            "summary": {"eval/linear_top1": (i * 7919 % 10_000) / 10_000},
            "linear_top1": (i * 7919 % 10_000) / 10_000,
        }
        for i in range(10_000)
    ]
    with session_scope(client.app.state.session_factory) as session:
        session.execute(insert(Job), rows)
    slowest = 0.0
    seen: list[str] = []
    for offset in range(0, 10_000, 500):
        started = time.perf_counter()
        page = client.get("/api/jobs", params={"limit": 500, "offset": offset, "sort": "name"}).json()
        slowest = max(slowest, time.perf_counter() - started)
        assert page["total"] == 10_000
        seen += [item["name"] for item in page["items"]]
    assert seen == [f"bulk-{i:05d}" for i in range(10_000)], "every job exactly once, in order"
    for params in (
        {"sort": "-linear_top1", "offset": 9_950},
        {"status": "failed", "tag": "bulk", "q": "bulk-0"},
    ):
        started = time.perf_counter()
        page = client.get("/api/jobs", params=params).json()
        slowest = max(slowest, time.perf_counter() - started)
        assert len(page["items"]) == 50
    assert slowest < 5.0, f"a page of 10,000 jobs took {slowest:.2f} s"
