"""API tokens: random secrets shown once, stored only as sha256 hashes.

A request authenticates with ``Authorization: Bearer <token>`` or the ``mmae_token`` cookie set by
``POST /api/login``. The first start of an empty database mints an ``admin`` token and writes it to
``data_dir/admin-token`` (mode 0600) so the CLI on the same machine finds it.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from service.models import ApiToken

COOKIE_NAME = "mmae_token"
TOKEN_PREFIX = "mmae_"
ADMIN_TOKEN_FILE = "admin-token"


class TokenCache:
    """Token hashes verified in the last ``ttl_s`` seconds -> token name: most requests skip the lookup.

    A revoked token keeps working for at most ``ttl_s`` seconds in a process that saw it recently.
    """

    def __init__(self, ttl_s: float = 5.0, max_entries: int = 1024) -> None:
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: dict[str, tuple[str, float]] = {}
        self._lookups: dict[str, asyncio.Future[str | None]] = {}

    async def name(self, digest: str, find: Callable[[], Awaitable[str | None]]) -> str | None:
        """The name of the token hashed to ``digest``: cached, else found by ``find`` once, however many
        requests ask meanwhile (an expiry under load sends one lookup to the database, not one each)."""
        cached = self.get(digest)
        if cached is not None:
            return cached
        lookup = self._lookups.get(digest)
        if lookup is None:
            lookup = self._lookups[digest] = asyncio.ensure_future(find())
            lookup.add_done_callback(lambda _: self._lookups.pop(digest, None))
        name = await asyncio.shield(lookup)
        if name is not None:
            self.put(digest, name)
        return name

    def get(self, digest: str) -> str | None:
        entry = self._entries.get(digest)
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def put(self, digest: str, name: str) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[digest] = (name, time.monotonic() + self.ttl_s)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, name: str) -> str:
    """Store a new token's hash under ``name`` and return the secret (the only time it is visible)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiToken(name=name, token_hash=hash_token(token)))
    session.flush()
    return token


def find_token(session: Session, token: str) -> ApiToken | None:
    """The live token row whose hash matches ``token``, or None."""
    digest = hash_token(token)
    return session.scalar(select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked.is_(False)))


def token_from_headers(authorization: str | None, cookie: str | None) -> str | None:
    """The bearer token if present, else the cookie's."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return cookie or None


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` to ``path`` readable by the owner only (created 0600, never world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    path.chmod(0o600)


def bootstrap_admin_token(session: Session, data_dir: Path) -> str | None:
    """Mint the ``admin`` token when no token exists yet; return it (None when tokens already exist)."""
    if session.scalar(select(exists().where(ApiToken.id.isnot(None)))):
        return None
    token = create_token(session, "admin")
    write_token_file(data_dir / ADMIN_TOKEN_FILE, token)
    return token
