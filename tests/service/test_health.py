"""``/api/health``: 200 with every dependency's state when all are up, 503 naming each one that is down, so
the compose health check (``curl -f``) sees an outage (issue 10, finding 8)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from service.store.db import make_engine, make_session_factory


@pytest.fixture
def ray_up(anonymous: TestClient, monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setattr(anonymous.app.state.ray, "is_available", lambda: True)
    return anonymous


def test_all_up_is_200_with_each_dependency(ray_up: TestClient) -> None:
    response = ray_up.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "ray": "ok", "failing": []}


def test_ray_down_is_503_naming_ray(anonymous: TestClient) -> None:
    response = anonymous.get("/api/health")  # no Ray dashboard answers in these tests
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "database": "ok", "ray": "unavailable", "failing": ["ray"]}


def test_database_down_is_503_naming_the_database(ray_up: TestClient) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    ray_up.app.state.session_factory = make_session_factory(unreachable)
    try:
        response = ray_up.get("/api/health")
    finally:
        unreachable.dispose()
    assert response.status_code == 503
    assert response.json()["failing"] == ["database"]
    assert response.json()["database"] == "unavailable"
