"""Authentication: every API route but health and login needs a token (bearer, or a login session's cookie)."""

from __future__ import annotations

import asyncio
import re
import stat
import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from service.api.main import create_app
from service.auth import ADMIN_TOKEN_FILE, Principal, Role, TokenCache, create_token
from service.settings import Settings
from service.store.db import session_scope
from service.store.models import ApiToken, LoginSession

ADMIN_ME = {"name": "admin", "role": "admin", "owner": "admin", "expires_at": None}


def principal(name: str) -> Principal:
    return Principal(token_id=1, name=name, role=Role.USER, owner=name)


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
    assert client.get("/api/me").json() == ADMIN_ME


def test_wrong_and_malformed_tokens_are_rejected(anonymous: TestClient, admin_token: str) -> None:
    for header in (f"Bearer {admin_token}x", "Bearer ", f"Basic {admin_token}", admin_token):
        assert anonymous.get("/api/me", headers={"Authorization": header}).status_code == 401


def test_login_sets_an_httponly_strict_session_cookie_without_the_token(
    anonymous: TestClient, admin_token: str
) -> None:
    assert anonymous.post("/api/login", json={"token": "nope"}).status_code == 401
    response = anonymous.post("/api/login", json={"token": admin_token})
    me = response.json()
    assert response.status_code == 200 and me | {"expires_at": None} == ADMIN_ME
    assert me["expires_at"] is not None, "a login session ends (30 days) although its token never does"
    cookie = response.headers["set-cookie"]
    assert "mmae_session=" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert admin_token not in cookie, "the cookie names a login session, never the API token"
    assert anonymous.get("/api/me").json() == me
    assert anonymous.post("/api/logout").status_code == 204
    anonymous.cookies.clear()
    assert anonymous.get("/api/me").status_code == 401


def test_logout_ends_the_session_so_a_replayed_cookie_is_refused(anonymous: TestClient, admin_token: str) -> None:
    anonymous.post("/api/login", json={"token": admin_token})
    session_cookie = anonymous.cookies["mmae_session"]
    assert anonymous.get("/api/jobs").status_code == 200
    assert anonymous.post("/api/logout").status_code == 204
    anonymous.cookies.clear()
    replayed = anonymous.get("/api/jobs", cookies={"mmae_session": session_cookie})
    assert replayed.status_code == 401, "logout must end the session server-side, not only clear the cookie"
    with session_scope(anonymous.app.state.session_factory) as session:
        assert session.scalar(select(func.count(LoginSession.id))) == 0
    bearer = {"Authorization": f"Bearer {admin_token}"}
    assert anonymous.get("/api/me", headers=bearer).status_code == 200, "the token itself stays valid"


def test_a_session_ends_with_its_token(anonymous: TestClient) -> None:
    anonymous.app.state.token_cache.ttl_s = 0.0
    factory = anonymous.app.state.session_factory
    with session_scope(factory) as session:
        token = create_token(session, "web")
    assert anonymous.post("/api/login", json={"token": token}).status_code == 200
    assert anonymous.get("/api/me").json()["name"] == "web"
    with session_scope(factory) as session:
        session.execute(update(ApiToken).where(ApiToken.name == "web").values(revoked=True))
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
    assert anonymous.get("/api/me", headers=headers).json()["name"] == "ci"
    with session_scope(factory) as session:
        session.execute(update(ApiToken).where(ApiToken.name == "ci").values(revoked=True))
    time.sleep(0.25)
    assert anonymous.get("/api/me", headers=headers).status_code == 401


def test_token_cache_expires_and_stays_bounded() -> None:
    cache = TokenCache(ttl_s=0.05, max_entries=2)
    cache.put("a", principal("alice"))
    assert cache.get("a") == principal("alice") and cache.get("b") is None
    time.sleep(0.06)
    assert cache.get("a") is None
    for digest in "xyz":
        cache.put(digest, principal(digest))
    assert cache.get("z") == principal("z") and len(cache._entries) <= 2


def test_first_start_writes_a_private_admin_token_once(settings: Settings, client: TestClient) -> None:
    path = settings.data_dir / ADMIN_TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = path.read_text()
    with TestClient(create_app(settings)):
        pass
    assert path.read_text() == first, "a second start must not mint another admin token"
    with session_scope(client.app.state.session_factory) as session:
        assert session.query(ApiToken).count() == 1


def test_first_start_prints_the_token_files_path_never_the_token(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    with TestClient(create_app(settings)):
        pass
    out = capsys.readouterr().out
    path = settings.data_dir / ADMIN_TOKEN_FILE
    token = path.read_text().strip()
    assert f"admin API token written to {path}" in out
    assert token not in out, "process output ends up in logs: the token goes to the 0600 file only"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_requests_waiting_for_the_same_token_share_one_lookup() -> None:
    cache, lookups = TokenCache(), []

    async def find() -> Principal:
        lookups.append(1)
        await asyncio.sleep(0.01)
        return principal("admin")

    async def many_requests() -> list[Principal | None]:
        return await asyncio.gather(*(cache.principal("digest", find) for _ in range(20)))

    assert asyncio.run(many_requests()) == [principal("admin")] * 20
    assert len(lookups) == 1 and cache.get("digest") == principal("admin")
