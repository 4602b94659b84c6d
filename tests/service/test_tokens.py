"""Token management: roles, owners, expiry, last use, and `mmae token create | list | revoke` on the database."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.auth import LAST_USED_EVERY, Role, create_token
from service.store.clock import utcnow
from service.store.db import session_scope
from service.store.models import ApiToken
from tests.service.conftest import Cli


def mint(client: TestClient, name: str, **fields: object) -> dict[str, str]:
    """A new token's bearer header (fields: role, owner, expires_at)."""
    with session_scope(client.app.state.session_factory) as session:
        return {"Authorization": f"Bearer {create_token(session, name, **fields)}"}


def row_of(client: TestClient, name: str) -> ApiToken:
    with session_scope(client.app.state.session_factory) as session:
        return session.scalars(select(ApiToken).where(ApiToken.name == name)).one()


def test_an_expired_token_is_refused(anonymous: TestClient) -> None:
    past = mint(anonymous, "old", expires_at=utcnow() - timedelta(seconds=1))
    assert anonymous.get("/api/me", headers=past).status_code == 401
    future = mint(anonymous, "new", expires_at=utcnow() + timedelta(days=1))
    assert anonymous.get("/api/me", headers=future).json()["expires_at"] is not None


def test_a_cached_token_stops_at_its_expiry(anonymous: TestClient) -> None:
    anonymous.app.state.token_cache.ttl_s = 60.0  # the expiry must be checked on a cache hit too
    headers = mint(anonymous, "brief", expires_at=utcnow() + timedelta(seconds=1))
    assert anonymous.get("/api/me", headers=headers).status_code == 200
    with session_scope(anonymous.app.state.session_factory) as session:  # as if the second had passed
        session.execute(update(ApiToken).where(ApiToken.name == "brief").values(expires_at=utcnow()))
    anonymous.app.state.token_cache._entries.clear()
    assert anonymous.get("/api/me", headers=headers).status_code == 401


def test_last_used_at_is_written_on_use_at_most_once_a_minute(anonymous: TestClient) -> None:
    anonymous.app.state.token_cache.ttl_s = 0.0  # every request looks the token up
    headers = mint(anonymous, "ci")
    assert row_of(anonymous, "ci").last_used_at is None
    assert anonymous.get("/api/jobs", headers=headers).status_code == 200
    first = row_of(anonymous, "ci").last_used_at
    assert first is not None
    assert anonymous.get("/api/jobs", headers=headers).status_code == 200
    assert row_of(anonymous, "ci").last_used_at == first, "a second read within the minute writes nothing"
    with session_scope(anonymous.app.state.session_factory) as session:
        stale = utcnow() - LAST_USED_EVERY - timedelta(seconds=1)
        session.execute(update(ApiToken).where(ApiToken.name == "ci").values(last_used_at=stale))
    assert anonymous.get("/api/jobs", headers=headers).status_code == 200
    assert row_of(anonymous, "ci").last_used_at.replace(tzinfo=None) > stale.replace(tzinfo=None)


def test_me_names_the_role_and_owner(anonymous: TestClient) -> None:
    headers = mint(anonymous, "laptop", role=Role.READ, owner="alice")
    me = anonymous.get("/api/me", headers=headers).json()
    assert me == {"name": "laptop", "role": "read", "owner": "alice", "expires_at": None}


def test_cli_creates_a_token_with_role_owner_and_expiry(anonymous: TestClient, cli: Cli) -> None:
    code, out, _ = cli("token", "create", "alice-laptop", "--role", "read", "--owner", "alice", "--expires-in", "7")
    token = out.strip()
    assert code == 0 and token.startswith("mmae_") and len(out.splitlines()) == 1
    me = anonymous.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert (me["name"], me["role"], me["owner"]) == ("alice-laptop", "read", "alice")
    assert me["expires_at"][:10] == (utcnow() + timedelta(days=7)).date().isoformat()
    code, out, _ = cli("token", "create", "ci")
    assert code == 0 and row_of(anonymous, "ci").role == "user" and row_of(anonymous, "ci").owner == "ci"


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (("token", "create", ""), "1 to 100 characters"),
        (("token", "create", "x", "--owner", " "), "owner must be 1 to 100 characters"),
        (("token", "create", "x", "--expires-in", "0"), "--expires-in must be 1 to 3650 days"),
        (("token", "create", "x", "--role", "root"), "invalid choice: 'root'"),
        (("token", "revoke", "999"), "no token with id 999"),
    ],
)
def test_cli_token_errors_are_one_line(anonymous: TestClient, cli: Cli, argv: tuple[str, ...], reason: str) -> None:
    code, _, err = cli(*argv)
    assert code == 2 and reason in err and len(err.strip().splitlines()) == 1


def test_cli_revokes_a_token_and_lists_every_token(anonymous: TestClient, cli: Cli) -> None:
    anonymous.app.state.token_cache.ttl_s = 0.0
    headers = mint(anonymous, "ci", role=Role.USER, owner="alice")
    assert anonymous.get("/api/me", headers=headers).status_code == 200
    token_id = row_of(anonymous, "ci").id
    code, out, _ = cli("token", "revoke", str(token_id))
    assert code == 0 and out.strip() == f"token {token_id} (ci) revoked"
    assert anonymous.get("/api/me", headers=headers).status_code == 401
    mint(anonymous, "gone", expires_at=utcnow() - timedelta(days=1))
    code, out, _ = cli("token", "list")
    lines = {line.split()[1]: line.split() for line in out.splitlines()[1:]}
    assert code == 0 and out.splitlines()[0].split()[:5] == ["ID", "NAME", "ROLE", "OWNER", "STATE"]
    assert lines["admin"][2:5] == ["admin", "admin", "live"]
    assert lines["ci"][2:5] == ["user", "alice", "revoked"] and lines["ci"][-1] != "never", "it was used"
    assert lines["gone"][4] == "expired"
