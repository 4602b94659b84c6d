"""The token is checked before any byte of the body is read, bodies are bounded, and JSON is strict however
its Content-Type is spelled (issue 10, finding 4 and the content-type part of finding 5)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.strict_json import MAX_JSON_DEPTH
from service.settings import DEFAULT_MAX_BODY_BYTES

MIB = 2**20


def post_stream(
    client: TestClient, path: str, chunks: Iterable[bytes], headers: dict[str, str], root_path: str = ""
) -> tuple[int, int]:
    """POST ``chunks`` straight to the ASGI app, as a server streams an upload: ``(status, bytes read)``.

    (The test client itself reads the whole body before the app runs, so it cannot show what was read.)
    """
    pending = iter(chunks)
    consumed, status = 0, 0

    async def receive() -> dict[str, Any]:
        nonlocal consumed
        chunk = next(pending, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        consumed += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": root_path,
        "headers": [(name.lower().encode(), value.encode()) for name, value in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def call() -> None:
        await client.app(scope, receive, send)

    client.portal.call(call)
    return status, consumed


def megabytes(count: int) -> Iterable[bytes]:
    return itertools.repeat(b" " * MIB, count)


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("path", "root_path"), [("/api/jobs", ""), ("/mmae/api/sweeps", "/mmae")])
def test_an_unauthenticated_200_mib_body_is_refused_unread(
    anonymous: TestClient, declared: bool, path: str, root_path: str
) -> None:
    headers = JSON | ({"content-length": str(200 * MIB)} if declared else {})
    for token in ({}, {"authorization": "Bearer mmae_not-a-token"}):
        assert post_stream(anonymous, path, megabytes(200), headers | token, root_path) == (401, 0)


def test_a_body_past_the_declared_limit_is_a_413_unread(client: TestClient, admin_token: str) -> None:
    headers = JSON | {"content-length": str(200 * MIB), "authorization": f"Bearer {admin_token}"}
    assert post_stream(client, "/api/jobs", megabytes(200), headers) == (413, 0)


@pytest.mark.parametrize("path", ["/api/jobs", "/api/sweeps", "/api/login"])
def test_a_chunked_body_is_read_no_further_than_the_limit(client: TestClient, admin_token: str, path: str) -> None:
    headers = JSON | {"authorization": f"Bearer {admin_token}"}
    status, consumed = post_stream(client, path, megabytes(200), headers)
    assert status == 413
    assert DEFAULT_MAX_BODY_BYTES < consumed <= DEFAULT_MAX_BODY_BYTES + MIB


def test_the_limit_answers_with_its_size(client: TestClient) -> None:
    response = client.post("/api/jobs", content=b" " * (DEFAULT_MAX_BODY_BYTES + 1), headers=JSON)
    assert response.status_code == 413
    assert response.json() == {"detail": f"request body larger than {DEFAULT_MAX_BODY_BYTES} bytes"}


def test_a_body_at_the_limit_goes_through(client: TestClient) -> None:
    body = json.dumps({"config": {"steps": 10}}).encode()
    response = client.post("/api/jobs", content=body.ljust(DEFAULT_MAX_BODY_BYTES), headers=JSON)
    assert response.status_code == 201, response.text


def test_public_and_page_paths_need_no_token(anonymous: TestClient) -> None:
    assert anonymous.get("/api/health").status_code == 503, "public: it answers (no Ray here), never 401"
    assert anonymous.post("/api/login", json={"token": "mmae_wrong"}).status_code == 401
    assert anonymous.get("/").status_code == 200
    assert anonymous.get("/api/nope").status_code == 401, "unknown API paths do not say whether they exist"


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH, 5000])
def test_deep_nesting_is_a_422_not_a_500(client: TestClient, depth: int) -> None:
    raw = f'{{"config": {{"steps": 10}}, "tags": {nested(depth)}}}'  # the body object is one more level
    response = client.post("/api/jobs", content=raw, headers=JSON)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["msg"] == f"JSON nested deeper than {MAX_JSON_DEPTH} levels"


def test_nesting_up_to_the_limit_is_parsed(client: TestClient) -> None:
    raw = f'{{"config": {{"steps": 10}}, "tags": {nested(MAX_JSON_DEPTH - 1)}}}'
    response = client.post("/api/jobs", content=raw, headers=JSON)
    assert response.status_code == 422 and response.json()["detail"][0]["loc"][:2] == ["body", "tags"]
    assert "valid string" in response.json()["detail"][0]["msg"], "reached the model: the depth was allowed"


@pytest.mark.parametrize(
    "content_type", ["APPLICATION/JSON", "Application/Json; charset=UTF-8", "application/vnd.mmae+json"]
)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ('{"config": {"loss": {"mu": Infinity}}}', "Infinity is not valid JSON"),
        ('{"config": {"loss": {"mu": NaN}}}', "NaN is not valid JSON"),
        ('{"config": {"steps": 10}, "name": "a\\u0000b"}', "without NUL"),
    ],
)
def test_every_json_content_type_is_strict(client: TestClient, content_type: str, raw: str, reason: str) -> None:
    response = client.post("/api/jobs", content=raw, headers={"content-type": content_type})
    assert response.status_code == 422, response.text
    assert reason in response.json()["detail"][0]["msg"]
    assert client.get("/api/jobs").json()["total"] == 0
