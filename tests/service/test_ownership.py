"""Roles and owners: a user token changes only its owner's jobs and sweeps, a read token changes nothing;
Idempotency-Keys belong to their token; event streams are capped per token."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from mmae.config import TrainConfig, config_hash
from service.api.main import create_app
from service.auth import Role, create_token
from service.scheduling import allocation
from service.settings import Settings
from service.store.db import session_scope
from service.store.models import Job
from tests.service.test_cli import free_port
from tests.tiny_config import TINY

SWEEP = {"name": "mu", "base_config": TINY, "parameters": {"loss.mu": {"values": [1.0, 3.0]}}}


@pytest.fixture
def tokens(client: TestClient, admin_token: str) -> dict[str, dict[str, str]]:
    """Bearer headers: the admin, two users (owners alice and bob), and a read token of alice."""
    headers = {"admin": {"Authorization": f"Bearer {admin_token}"}}
    with session_scope(client.app.state.session_factory) as session:
        for name, role, owner in (
            ("alice", Role.USER, "alice"),
            ("bob", Role.USER, "bob"),
            ("reader", Role.READ, "alice"),
        ):
            headers[name] = {"Authorization": f"Bearer {create_token(session, name, role=role, owner=owner)}"}
    return headers


def post_job(client: TestClient, headers: dict[str, str], key: str | None = None, **fields: Any) -> httpx.Response:
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/api/jobs", json={"config": TINY} | fields, headers=headers | extra)


@pytest.mark.parametrize(("caller", "allowed"), [("admin", True), ("alice", True), ("bob", False), ("reader", False)])
def test_cancel_and_retry_need_the_jobs_owner_or_an_admin(
    client: TestClient, tokens: dict[str, dict[str, str]], caller: str, allowed: bool
) -> None:
    job = post_job(client, tokens["alice"]).json()
    assert job["owner"] == "alice"
    cancel = client.post(f"/api/jobs/{job['id']}/cancel", headers=tokens[caller])
    assert cancel.status_code == (202 if allowed else 403), cancel.text
    if not allowed:
        reason = cancel.json()["detail"]
        assert "read role" in reason if caller == "reader" else "belongs to 'alice'" in reason
        client.post(f"/api/jobs/{job['id']}/cancel", headers=tokens["admin"])
    retry = client.post(f"/api/jobs/{job['id']}/retry", headers=tokens[caller])
    assert retry.status_code == (202 if allowed else 403), retry.text
    assert client.get(f"/api/jobs/{job['id']}", headers=tokens[caller]).status_code == 200, "everyone reads"


def test_a_job_without_an_owner_is_changed_by_admins_only(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    config = TrainConfig.model_validate(TINY)
    with session_scope(client.app.state.session_factory) as session:  # as a job from before owners existed
        job = Job(name="old", method="mmae", config=config.model_dump(mode="json"), config_hash=config_hash(config))
        session.add(job)
        session.flush()
        job_id = job.id
    refused = client.post(f"/api/jobs/{job_id}/cancel", headers=tokens["alice"])
    assert refused.status_code == 403 and "has no owner" in refused.json()["detail"]
    assert client.get(f"/api/jobs/{job_id}").json()["owner"] is None
    assert client.post(f"/api/jobs/{job_id}/cancel", headers=tokens["admin"]).status_code == 202


def test_sweeps_record_their_owner_and_only_it_or_an_admin_retries_them(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    sweep = client.post("/api/sweeps", json=SWEEP, headers=tokens["alice"]).json()
    assert sweep["owner"] == "alice"
    cells = client.get("/api/jobs", params={"sweep_id": sweep["id"]}).json()["items"]
    assert {cell["owner"] for cell in cells} == {"alice"}
    assert client.post(f"/api/jobs/{cells[0]['id']}/cancel", headers=tokens["bob"]).status_code == 403
    refused = client.post(f"/api/sweeps/{sweep['id']}/retry-failed", headers=tokens["bob"])
    assert refused.status_code == 403 and f"sweep {sweep['id']} belongs to 'alice'" in refused.json()["detail"]
    assert client.post(f"/api/sweeps/{sweep['id']}/retry-failed", headers=tokens["alice"]).status_code == 200
    same = client.post("/api/sweeps", json=SWEEP, headers=tokens["bob"])
    assert same.status_code == 201 and same.json()["owner"] == "bob", "another owner's identical sweep is its own"


def test_a_read_token_changes_nothing(client: TestClient, tokens: dict[str, dict[str, str]]) -> None:
    routes = [
        (method.upper(), path)
        for path, operations in client.app.openapi()["paths"].items()
        for method in operations
        if method.upper() in {"POST", "PUT", "PATCH", "DELETE"} and path not in {"/api/login", "/api/logout"}
    ]
    assert len(routes) >= 5
    for method, path in routes:
        body = {"config": TINY} if path == "/api/jobs" else {}
        response = client.request(method, re.sub(r"\{[^}]+\}", "1", path), json=body, headers=tokens["reader"])
        assert response.status_code == 403, (method, path, response.text)
        assert "read role" in response.json()["detail"]
    assert client.get("/api/jobs", headers=tokens["reader"]).status_code == 200


def test_an_idempotency_key_replays_only_the_same_request_of_the_same_token(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    first = post_job(client, tokens["alice"], "k-1", priority=1)
    assert first.status_code == 201
    again = post_job(client, tokens["alice"], "k-1", priority=1)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    different = post_job(client, tokens["alice"], "k-1", priority=2)
    assert different.status_code == 409 and "different request" in different.json()["detail"]
    other = post_job(client, tokens["bob"], "k-1", priority=1)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"], "keys are per token"
    assert other.json()["owner"] == "bob"


def test_a_replay_of_an_auto_allocation_matches_after_the_cluster_changed_size(
    client: TestClient, tokens: dict[str, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(allocation, "node_totals", lambda ray: [{"CPU": 4.0}])
    first = post_job(client, tokens["alice"], "k-auto")
    assert first.status_code == 201 and first.json()["resources"]["num_cpus"] == 4.0
    monkeypatch.setattr(allocation, "node_totals", lambda ray: [{"CPU": 8.0}])
    again = post_job(client, tokens["alice"], "k-auto")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text


def test_a_sweeps_idempotency_key_is_per_token_and_refuses_a_different_body(
    client: TestClient, tokens: dict[str, dict[str, str]]
) -> None:
    key = {"Idempotency-Key": "s-1"}
    first = client.post("/api/sweeps", json=SWEEP, headers=tokens["alice"] | key)
    assert first.status_code == 201
    changed = SWEEP | {"name": "mu-2"}
    assert client.post("/api/sweeps", json=changed, headers=tokens["alice"] | key).status_code == 409
    other = client.post("/api/sweeps", json=changed, headers=tokens["bob"] | key)
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """A live API (uvicorn in a thread) allowing 2 event streams per token: streams end on disconnect."""
    port = free_port()
    app = create_app(settings.model_copy(update={"max_streams_per_token": 2}))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_event_streams_are_capped_per_token_and_released_on_disconnect(live_api: str, settings: Settings) -> None:
    token = (settings.data_dir / "admin-token").read_text().strip()
    with httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {token}"}, timeout=10) as http:
        job = http.post("/api/jobs", json={"config": TINY}).json()  # stays queued: no scheduler
        url = f"/api/jobs/{job['id']}/events"
        with http.stream("GET", url) as one, http.stream("GET", url) as two:
            assert one.status_code == two.status_code == 200
            refused = http.get(url)
            assert refused.status_code == 429 and "MMAE_MAX_STREAMS_PER_TOKEN" in refused.json()["detail"]
        deadline = time.monotonic() + 10
        while True:  # both clients went away: their slots come back once the server sees it
            with http.stream("GET", url) as again:
                if again.status_code == 200:
                    break
            assert time.monotonic() < deadline, "a closed stream's slot was never given back"
            time.sleep(0.2)
        http.post(f"/api/jobs/{job['id']}/cancel")
        ended = [http.get(url).status_code for _ in range(3)]  # a cancelled job's stream ends by itself
        assert ended == [200, 200, 200], "streams that end must give their slot back"
