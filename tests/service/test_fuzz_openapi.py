"""Fuzzing every route from the app's own OpenAPI schema: no request, with or without a token, gets a 5xx.

Each example picks an operation, path and query values and a JSON body drawn from the schema (bounds
included, and values beyond them), or arbitrary JSON instead, and sends it as an admin, with a wrong
token or with none. The run is derandomised with a fixed budget (``EXAMPLES`` per database), so CI runs
the same cases every time. Ray is the scripted transport of ``test_ray_submit_retry`` (always up), so a
503 can only be the service's own failure. Event streams are left out: they run until their job ends
(``test_api_metrics`` covers them).
"""

from __future__ import annotations

import string
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.api.main import create_app
from service.settings import Settings
from tests.service.test_ray_submit_retry import FlakyRay, client_of

EXAMPLES = 300
STREAMS = ("/events",)
MAX_DEPTH = 4
JSON_LEAVES = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values for a JSON schema: mostly valid ones, some past its bounds, any JSON below ``MAX_DEPTH``."""
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[-1]], components, depth)
    if depth > MAX_DEPTH:
        return JSON_LEAVES
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in schema:
            return st.one_of([from_schema(part, components, depth) for part in schema[combinator]])
    kind = schema.get("type")
    if kind == "object":
        properties = {
            name: from_schema(part, components, depth + 1) for name, part in schema.get("properties", {}).items()
        }
        required = {name: properties.pop(name) for name in schema.get("required", []) if name in properties}
        if not required and not properties:
            return st.dictionaries(st.text(max_size=8), ANY_JSON, max_size=3)
        return st.fixed_dictionaries(required, optional=properties)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), components, depth + 1), max_size=3)
    return _scalar(kind, schema)


def _scalar(kind: str | None, schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    if kind == "integer":
        bounded = st.integers(
            schema.get("minimum", schema.get("exclusiveMinimum")), schema.get("maximum", schema.get("exclusiveMaximum"))
        )
        return bounded | st.integers() | st.integers(min_value=2**63, max_value=2**70)
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    if kind == "string":
        return st.text(max_size=24)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    return ANY_JSON


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, methods in schema["paths"].items()
        if not path.endswith(STREAMS)
        for method, operation in methods.items()
    ]


@st.composite
def requests(draw: st.DrawFn, schema: dict[str, Any]) -> dict[str, Any]:
    """One request: method, URL, query, headers and (for operations with a body) JSON."""
    components = schema["components"]["schemas"]
    method, path, operation = draw(st.sampled_from(operations(schema)))
    query: dict[str, Any] = {}
    headers = {"Authorization": draw(st.sampled_from(["admin", "Bearer mmae_wrong", ""]))}
    for parameter in operation.get("parameters", []):
        value = draw(from_schema(parameter.get("schema", {}), components) | st.text(max_size=12))
        if parameter["in"] == "path":
            path = path.replace("{" + parameter["name"] + "}", quote(str(value), safe="") or "0")
        elif parameter["in"] == "header" and draw(st.booleans()):
            headers[parameter["name"]] = draw(st.text(string.ascii_letters + string.digits + "-", max_size=80))
        elif parameter["in"] == "query" and draw(st.booleans()):
            query[parameter["name"]] = [str(item) for item in value] if isinstance(value, list) else str(value)
    body = None
    if "requestBody" in operation:
        body_schema = operation["requestBody"]["content"]["application/json"]["schema"]
        body = draw(from_schema(body_schema, components) | ANY_JSON)
    return {"method": method, "url": path, "params": query, "headers": headers, "json": body}


@pytest.fixture
def fuzzed_app(tmp_path, database_url: str, monkeypatch: pytest.MonkeyPatch):
    settings_ = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        run_scheduler=False,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        max_sweep_cells=20,
    )
    with TestClient(create_app(settings_)) as client:
        client.app.state.ray = ray = client_of(FlakyRay([]))
        monkeypatch.setattr(ray, "is_available", lambda: True)
        token = (settings_.data_dir / "admin-token").read_text().strip()
        yield client, token


@pytest.mark.slow
def test_no_route_answers_5xx_to_anything_from_the_schema(fuzzed_app) -> None:
    client, token = fuzzed_app
    schema = client.app.openapi()
    seen: set[int] = set()

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request=requests(schema))
    def no_server_error(request: dict[str, Any]) -> None:
        if request["headers"]["Authorization"] == "admin":
            request["headers"]["Authorization"] = f"Bearer {token}"
        response = client.request(**request)
        assert response.status_code < 500, (request, response.status_code, response.text[:500])
        seen.add(response.status_code)

    no_server_error()
    assert {200, 201, 401, 404, 422} <= seen, f"the cases reached past the gate and the validation: {seen}"
