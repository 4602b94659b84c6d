"""Authentication: every API route but health and login needs a token (bearer or cookie)."""

from __future__ import annotations

import asyncio
import re
import stat
import time

from fastapi.testclient import TestClient
from sqlalchemy import update

from service.auth import ADMIN_TOKEN_FILE, TokenCache, create_token
from service.db import session_scope
from service.models import ApiToken
from service.settings import Settings

PUBLIC = {("GET", "/api/health"), ("POST", "/api/login"), ("POST", "/api/logout")}


def api_routes(client: TestClient) -> list[tuple[str, str]]:
    paths = client.app.openapi()["paths"]
    return [(method.upper(), path) for path, operations in paths.items() for method in operations]


def test_every_api_route_but_health_and_login_answers_401_without_a_token(anonymous: TestClient) -> None:
    routes = api_routes(anonymous)
    assert len(routes) >= 20
    for method, path in routes:
        if (method, path) in PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "1", path)
        response = anonymous.request(method, url, json={} if method == "POST" else None)
        assert response.status_code == 401, (method, path, response.text)
        assert response.json() == {"detail": "not authenticated"}
        assert response.headers["www-authenticate"] == "Bearer"


def test_web_shell_is_public(anonymous: TestClient) -> None:
    assert anonymous.get("/").status_code == 200


def test_bearer_token_authenticates(client: TestClient) -> None:
    assert client.get("/api/me").json() == {"name": "admin"}


def test_wrong_and_malformed_tokens_are_rejected(anonymous: TestClient, admin_token: str) -> None:
    for header in (f"Bearer {admin_token}x", "Bearer ", f"Basic {admin_token}", admin_token):
        assert anonymous.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_login_sets_an_httponly_strict_cookie_and_logout_clears_it(
    anonymous: TestClient, admin_token: str
) -> None:
    assert anonymous.post("/api/login", json={"token": "nope"}).status_code == 401
    response = anonymous.post("/api/login", json={"token": admin_token})
    assert response.status_code == 200 and response.json() == {"name": "admin"}
    cookie = response.headers["set-cookie"]
    assert "mmae_token=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert anonymous.get("/api/me").json() == {"name": "admin"}
    assert anonymous.post("/api/logout").status_code == 204
    anonymous.cookies.clear()
    assert anonymous.get("/api/me").status_code == 401


def test_login_validates_its_body(anonymous: TestClient) -> None:
    response = anonymous.post("/api/login", json={"tok": "x"})
    assert response.status_code == 422
    assert {tuple(e["loc"]) for e in response.json()["detail"]} == {("body", "token"), ("body", "tok")}


def test_created_tokens_work_and_revoked_tokens_stop_within_the_cache_ttl(
    client: TestClient, anonymous: TestClient
) -> None:
    client.app.state.token_cache.ttl_s = 0.2
    factory = client.app.state.session_factory
    with session_scope(factory) as session:
        token = create_token(session, "ci")
    headers = {"Authorization": f"Bearer {token}"}
    assert anonymous.get("/api/me", headers=headers).json() == {"name": "ci"}
    with session_scope(factory) as session:
        session.execute(update(ApiToken).where(ApiToken.name == "ci").values(revoked=True))
    time.sleep(0.25)
    assert anonymous.get("/api/me", headers=headers).status_code == 401


def test_token_cache_expires_and_stays_bounded() -> None:
    cache = TokenCache(ttl_s=0.05, max_entries=2)
    cache.put("a", "alice")
    assert cache.get("a") == "alice" and cache.get("b") is None
    time.sleep(0.06)
    assert cache.get("a") is None
    for digest in "xyz":
        cache.put(digest, digest)
    assert cache.get("z") == "z" and len(cache._entries) <= 2


def test_first_start_writes_a_private_admin_token_once(settings: Settings, client: TestClient) -> None:
    path = settings.data_dir / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    from service.main import create_app

    with TestClient(create_app(settings)):
        pass
    assert path.read_text() == first, "a second start must not mint another admin token"
    with session_scope(client.app.state.session_factory) as session:
        assert session.query(ApiToken).count() == 1


def test_requests_waiting_for_the_same_token_share_one_lookup() -> None:
    cache, lookups = TokenCache(), []

    async def find() -> str:
        lookups.append(1)
        await asyncio.sleep(0.01)
        return "admin"

    async def many_requests() -> list[str | None]:
        return await asyncio.gather(*(cache.name("digest", find) for _ in range(20)))

    assert asyncio.run(many_requests()) == ["admin"] * 20
    assert len(lookups) == 1 and cache.get("digest") == "admin"
