"""Bad input is a 422 that names the field and the reason, never a 500 (hand-written fuzz cases)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.auth import TokenCache
from service.store.db import Reads, make_engine, make_session_factory

GOOD = {"config": {"steps": 10}}

JOB_CASES: list[tuple[str, Any, tuple[Any, ...], str]] = [
    ("unknown top-level field", {**GOOD, "prio": 1}, ("body", "prio"), "Extra inputs"),
    (
        "unknown config field",
        {"config": {"loss": {"muu": 1}}},
        ("body", "config", "loss", "muu"),
        "Extra inputs",
    ),
    ("unknown config section", {"config": {"losses": {}}}, ("body", "config", "losses"), "Extra inputs"),
    ("mu out of range", {"config": {"loss": {"mu": 0}}}, ("body", "config", "loss", "mu"), "greater than 0"),
    ("mu wrong type", {"config": {"loss": {"mu": "big"}}}, ("body", "config", "loss", "mu"), "valid number"),
    ("steps wrong type", {"config": {"steps": [1]}}, ("body", "config", "steps"), "valid integer"),
    ("steps fractional", {"config": {"steps": 1.5}}, ("body", "config", "steps"), "fractional part"),
    ("bad method", {"config": {"method": "dino"}}, ("body", "config", "method"), "'mae'"),
    (
        "mask ratio of 1",
        {"config": {"model": {"mask_ratio": 1.0}}},
        ("body", "config", "model", "mask_ratio"),
        "less than 1",
    ),
    ("inconsistent config", {"config": {"model": {"patch_size": 3}}}, ("body", "config"), "must divide"),
    ("config not an object", {"config": [1, 2]}, ("body", "config"), "valid dictionary"),
    ("config missing", {"name": "x"}, ("body", "config"), "Field required"),
    ("priority too high", {**GOOD, "priority": 10**6}, ("body", "priority"), "less than or equal"),
    ("negative retries", {**GOOD, "max_retries": -1}, ("body", "max_retries"), "greater than or equal"),
    (
        "zero cpus",
        {**GOOD, "resources": {"num_cpus": 0}},
        ("body", "resources", "num_cpus"),
        "greater than 0",
    ),
    ("unknown resource", {**GOOD, "resources": {"tpus": 1}}, ("body", "resources", "tpus"), "Extra inputs"),
    (
        "zero workers",
        {**GOOD, "resources": {"workers": 0}},
        ("body", "resources", "workers"),
        "greater than or equal to 1",
    ),
    (
        "too many workers",
        {**GOOD, "resources": {"workers": 257}},
        ("body", "resources", "workers"),
        "less than or equal to 256",
    ),
    (
        "fractional workers",
        {**GOOD, "resources": {"workers": 1.5}},
        ("body", "resources", "workers"),
        "fractional part",
    ),
    (
        "unknown placement",
        {**GOOD, "resources": {"placement": "strict_spread"}},
        ("body", "resources", "placement"),
        "'pack' or 'spread'",
    ),
    (
        "batch not divisible by the workers",
        {"config": {"data": {"batch_size": 64}}, "resources": {"workers": 3}},
        ("body", "resources", "workers"),
        "config.data.batch_size 64 is not divisible by resources.workers 3",
    ),
    ("bad tag", {**GOOD, "tags": ["has space"]}, ("body", "tags", 0), "match pattern"),
    ("tag not a string", {**GOOD, "tags": [3]}, ("body", "tags", 0), "valid string"),
    ("empty name", {**GOOD, "name": "  "}, ("body", "name"), "at least 1"),
    ("name with control characters", {**GOOD, "name": "a\x00b"}, ("body", "name"), "without NUL"),
    ("body not an object", [1], ("body",), "valid dictionary"),
]


@pytest.mark.parametrize(("case", "body", "loc", "reason"), JOB_CASES, ids=[case[0] for case in JOB_CASES])
def test_bad_job_bodies_name_the_field(
    client: TestClient, case: str, body: Any, loc: tuple[Any, ...], reason: str
) -> None:
    response = client.post("/api/jobs", json=body)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    match = [error for error in errors if tuple(error["loc"]) == loc]
    assert match, errors
    assert reason in match[0]["msg"]
    assert set(match[0]) == {"loc", "msg", "type"}, "inputs are not echoed back"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"config": {"loss": {"mu": NaN}}}', "NaN is not valid JSON"),
        ('{"config": {"loss": {"mu": Infinity}}}', "Infinity is not valid JSON"),
        ('{"config": {"data": {"root": "\\ud800"}}}', "valid Unicode"),
        ('{"config": ', "JSON decode error"),
        (b'{"name": "\xff"}', "utf-8"),
    ],
)
def test_malformed_json_is_a_422(client: TestClient, raw: str | bytes, reason: str) -> None:
    response = client.post("/api/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"][0]["msg"]


def test_lone_surrogates_are_located(client: TestClient) -> None:
    raw = '{"config": {"data": {"root": "x\\udfff"}}}'
    response = client.post("/api/jobs", content=raw, headers={"content-type": "application/json"})
    assert response.json()["detail"][0]["loc"] == ["body", "config", "data", "root"]


def test_a_sweep_cell_whose_batch_does_not_split_names_the_cell_and_creates_nothing(client: TestClient) -> None:
    body = {
        "name": "batches",
        "base_config": {"data": {"batch_size": 64}},
        "parameters": {"data.batch_size": {"values": [64, 66]}, "loss.mu": {"values": [1.0]}},
        "resources": {"workers": 4},
    }
    response = client.post("/api/sweeps", json=body)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "resources", "workers"]
    assert error["msg"].startswith("sweep cell {'data.batch_size': 66, 'loss.mu': 1.0}: ")
    assert "config.data.batch_size 66 is not divisible by resources.workers 4" in error["msg"]
    assert client.get("/api/sweeps").json()["total"] == 0
    assert client.get("/api/jobs").json()["total"] == 0


QUERY_CASES: list[tuple[str, str, dict[str, Any], tuple[Any, ...]]] = [
    ("bad sort key", "/api/jobs", {"sort": "-loss"}, ("query", "sort")),
    ("bad status", "/api/jobs", {"status": "sleeping"}, ("query", "status", 0)),
    ("bad method", "/api/jobs", {"method": "dino"}, ("query", "method")),
    ("limit too big", "/api/jobs", {"limit": 501}, ("query", "limit")),
    ("limit zero", "/api/jobs", {"limit": 0}, ("query", "limit")),
    ("negative offset", "/api/jobs", {"offset": -1}, ("query", "offset")),
    ("huge offset", "/api/jobs", {"offset": 10**12}, ("query", "offset")),
    ("sweep id not a number", "/api/jobs", {"sweep_id": "x"}, ("query", "sweep_id")),
    ("bad tag filter", "/api/jobs", {"tag": "a b"}, ("query", "tag")),
    ("NUL in search", "/api/jobs", {"q": "a\x00"}, ("query", "q")),
    ("job id not a number", "/api/jobs/abc", {}, ("path", "job_id")),
    ("job id overflows", "/api/jobs/99999999999999999999", {}, ("path", "job_id")),
    ("job id zero", "/api/jobs/0", {}, ("path", "job_id")),
    ("max_points too small", "/api/jobs/1/metrics", {"max_points": 3}, ("query", "max_points")),
    ("since_step not a number", "/api/jobs/1/metrics", {"since_step": "x"}, ("query", "since_step")),
    ("tail too long", "/api/jobs/1/logs", {"tail": 10**6}, ("query", "tail")),
    ("sweep id negative", "/api/sweeps/-3", {}, ("path", "sweep_id")),
    ("sweeps limit", "/api/sweeps", {"limit": "many"}, ("query", "limit")),
]


@pytest.mark.parametrize(("case", "path", "params", "loc"), QUERY_CASES, ids=[case[0] for case in QUERY_CASES])
def test_bad_query_and_path_parameters_name_the_parameter(
    client: TestClient, case: str, path: str, params: dict[str, Any], loc: tuple[Any, ...]
) -> None:
    response = client.get(path, params=params)
    assert response.status_code == 422, response.text
    assert tuple(response.json()["detail"][0]["loc"]) == loc


def test_bad_idempotency_key_is_named(client: TestClient) -> None:
    response = client.post("/api/jobs", json=GOOD, headers={"Idempotency-Key": "x" * 201})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Idempotency-Key"]


def test_wrong_content_type_is_a_422_not_a_500(client: TestClient) -> None:
    response = client.post("/api/jobs", content="config=1", headers={"content-type": "text/plain"})
    assert response.status_code == 422


def test_unknown_route_and_method(client: TestClient) -> None:
    assert client.get("/api/nope").status_code == 404
    assert client.delete("/api/jobs").status_code == 405


def test_a_database_outage_is_a_503_and_health_says_so(client: TestClient) -> None:
    unreachable = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    client.app.state.session_factory = make_session_factory(unreachable)
    client.app.state.reads = Reads(unreachable, threads=1)
    client.app.state.token_cache = TokenCache()
    try:
        response = client.get("/api/jobs")
        assert response.status_code == 503
        assert response.json() == {"detail": "database unavailable, try again shortly"}
        assert client.get("/api/health").json()["database"] == "unavailable"
    finally:
        unreachable.dispose()
