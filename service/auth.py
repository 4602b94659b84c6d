"""API tokens and login sessions: random secrets shown once, stored only as sha256 hashes.

A request authenticates with ``Authorization: Bearer <token>``, or with the ``mmae_session`` cookie set
by ``POST /api/login``: the cookie names a server-side login session (never the token), which logout
deletes. A token has a ``Role``, an ``owner`` (whose jobs it may change) and an optional expiry.

The first start of an empty database mints an ``admin`` token and writes it to ``data_dir/admin-token``
(mode 0600, never printed) so the CLI on the same machine finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

from sqlalchemy import delete, exists, or_, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from service.store.clock import as_utc, utcnow
from service.store.models import ApiToken, LoginSession

COOKIE_NAME = "mmae_session"
TOKEN_PREFIX = "mmae_"
SESSION_PREFIX = "mmae_s_"
ADMIN_TOKEN_FILE = "admin-token"
BOOTSTRAP_NAME = "admin"
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often per token


class Role(StrEnum):
    """What a token may do: ``admin`` everything; ``user`` read all and change only its owner's jobs and
    sweeps; ``read`` read only."""

    ADMIN = "admin"
    USER = "user"
    READ = "read"


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for: the token's id, name, role and owner, and when its access ends
    (the earlier of the token's and the login session's expiry; None: never)."""

    token_id: int
    name: str
    role: Role
    owner: str
    expires_at: datetime | None = None

    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    def may_change(self, owner: str | None) -> bool:
        """Whether this caller may cancel, retry or reprioritise work owned by ``owner``."""
        return self.role is Role.ADMIN or (self.role is Role.USER and owner is not None and owner == self.owner)


class TokenCache:
    """Credential hashes verified in the last ``ttl_s`` seconds -> Principal: most requests skip the lookup.

    A revoked token keeps working for at most ``ttl_s`` seconds in a process that saw it recently (a
    logged-out session stops at once in the process that logged it out: ``drop``).
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 1024) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lookups: dict[str, asyncio.Future[Principal | None]] = {}

    async def principal(self, key: str, find: Callable[[], Awaitable[Principal | None]]) -> Principal | None:
        """The principal of the credential cached under ``key``, else found by ``find`` once, however many
        requests ask meanwhile (an expiry under load sends one lookup to the database, not one each)."""
        cached = self.get(key)
        if cached is not None:
            return cached
        lookup = self._lookups.get(key)
        if lookup is None:
            lookup = self._lookups[key] = asyncio.ensure_future(find())
            lookup.add_done_callback(lambda _: self._lookups.pop(key, None))
        principal = await asyncio.shield(lookup)
        if principal is not None:
            self.put(key, principal)
        return principal

    def get(self, key: str) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, key: str, principal: Principal) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (principal, time.monotonic() + self.ttl_s)

    def drop(self, key: str) -> None:
        self._entries.pop(key, None)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def cache_key(kind: str, secret: str) -> str:
    """Where ``TokenCache`` keeps the principal of a credential (``kind``: "token" or "session")."""
    return f"{kind}:{hash_token(secret)}"


def create_token(
    session: Session, name: str, *, role: Role = Role.USER, owner: str | None = None, expires_at: datetime | None = None
) -> str:
    """Store a new token's hash and return the secret (the only time it is visible); ``owner`` defaults
    to ``name``, ``expires_at`` None never expires."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(name=name, token_hash=hash_token(token), role=role, owner=owner or name, expires_at=expires_at)
    session.add(row)
    session.flush()
    return token


def _live(now: datetime) -> ColumnElement[bool]:
    return ApiToken.revoked.is_(False) & or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > now)


def principal_of(row: ApiToken, expires_at: datetime | None = None) -> Principal:
    ends = [as_utc(moment) for moment in (row.expires_at, expires_at) if moment is not None]
    return Principal(row.id, row.name, Role(row.role), row.owner, min(ends) if ends else None)


def find_token(session: Session, token: str) -> ApiToken | None:
    """The live (not revoked, not expired) token row whose hash matches ``token``, or None."""
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token), _live(utcnow())))


def identify_token(session: Session, token: str) -> Principal | None:
    """The principal of a live bearer token, recording its use (``touch``)."""
    row = find_token(session, token)
    if row is None:
        return None
    touch(session, row)
    return principal_of(row)


def identify_session(session: Session, secret: str) -> Principal | None:
    """The principal of a live login session whose token is live too, recording the token's use."""
    now = utcnow()
    found = session.execute(
        select(ApiToken, LoginSession.expires_at)
        .join(LoginSession, LoginSession.token_id == ApiToken.id)
        .where(LoginSession.session_hash == hash_token(secret), LoginSession.expires_at > now, _live(now))
    ).one_or_none()
    if found is None:
        return None
    row, session_ends = found
    touch(session, row)
    return principal_of(row, session_ends)


def touch(session: Session, row: ApiToken) -> None:
    """Set ``last_used_at`` to now when it is older than ``LAST_USED_EVERY`` (or unset): one write a minute
    per token at most, and none from a read that finds it fresh. Commits (its own short transaction)."""
    now = utcnow()
    if row.last_used_at is not None and as_utc(row.last_used_at) > now - LAST_USED_EVERY:
        return
    stale = or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USED_EVERY)
    # No in-Python matching of the session's row: SQLite gives its datetime back naive, ``now`` is aware.
    statement = update(ApiToken).where(ApiToken.id == row.id, stale).values(last_used_at=now)
    session.execute(statement.execution_options(synchronize_session=False))
    session.commit()


def create_login_session(session: Session, token_id: int, lifetime: timedelta) -> tuple[str, datetime]:
    """A new login session for ``token_id``: its secret (for the cookie) and when it ends."""
    secret = SESSION_PREFIX + secrets.token_urlsafe(32)
    ends = utcnow() + lifetime
    session.add(LoginSession(session_hash=hash_token(secret), token_id=token_id, expires_at=ends))
    session.flush()
    return secret, ends


def end_login_session(session: Session, secret: str) -> None:
    """Delete the login session ``secret`` names (and any expired ones); nothing when it is unknown."""
    session.execute(
        delete(LoginSession).where(
            or_(LoginSession.session_hash == hash_token(secret), LoginSession.expires_at <= utcnow())
        )
    )


def credential_key(authorization: str | None, cookie: str | None) -> tuple[str, str] | None:
    """``("token", secret)`` for a bearer header, else ``("session", secret)`` for the cookie, else None."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return "token", value.strip()
    return ("session", cookie) if cookie else None


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by the owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)


def bootstrap_admin_token(session: Session, data_dir: Path) -> Path | None:
    """Mint the ``admin`` token when no token exists yet and write it to its 0600 file; return the file's
    path (None when tokens already exist). The token itself is never returned, so it is never printed."""
    if session.scalar(select(exists().where(ApiToken.id.isnot(None)))):
        return None
    path = data_dir / ADMIN_TOKEN_FILE
    write_token_file(path, create_token(session, BOOTSTRAP_NAME, role=Role.ADMIN))
    return path
