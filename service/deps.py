"""FastAPI dependencies: everything a route needs comes from ``app.state``, set up by the lifespan.

Dependencies that only read ``app.state`` are ``async``: FastAPI runs a sync dependency in its
threadpool, and each such hop costs a thread handoff per request. Read routes are ``async`` too and
do all of their database work in one ``Reads.run`` call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from service.auth import COOKIE_NAME, TokenCache, find_token, hash_token, token_from_headers
from service.db import Reads
from service.ray_client import RayClient
from service.settings import Settings
from service.tracking import Tracker

TOKEN_NAME_SCOPE_KEY = "mmae.token_name"  # where service.gate leaves the authenticated name in a request's scope


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_reads(request: Request) -> Reads:
    return request.app.state.reads


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) when the request ends."""
    with request.app.state.session_factory() as session:
        yield session


async def get_ray(request: Request) -> RayClient:
    return request.app.state.ray


async def get_tracker(request: Request) -> Tracker:
    return request.app.state.tracker


async def get_scheduler_wake(request: Request) -> Callable[[], None]:
    """Admit queued jobs now: this process's scheduler loop when it leads, else a notice to the leader."""
    return request.app.state.scheduler.wake


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
RayDep = Annotated[RayClient, Depends(get_ray)]
TrackerDep = Annotated[Tracker, Depends(get_tracker)]
WakeSchedulerDep = Annotated[Callable[[], None], Depends(get_scheduler_wake)]


async def authenticate(connection: HTTPConnection) -> str | None:
    """The name of the caller's live token (bearer header, else the cookie), or None; reads no body.

    Verified tokens are remembered for a few seconds (``TokenCache``), so most requests skip the lookup
    (an indexed one, on the token's hash, in a worker thread, shared by the requests that wait for it).
    """
    token = token_from_headers(connection.headers.get("authorization"), connection.cookies.get(COOKIE_NAME))
    if token is None:
        return None
    state = connection.app.state
    cache: TokenCache = state.token_cache

    async def lookup() -> str | None:
        reads: Reads = state.reads
        row = await reads.run(find_token, token)  # its own short session: a stream must not pin one
        return row.name if row is not None else None

    return await cache.name(hash_token(token), lookup)


async def current_token_name(request: Request) -> str:
    """The caller's token name: the one ``service.gate`` found before the body was read, else looked up
    here (a route outside the gate's protected paths); 401 when missing, unknown or revoked."""
    name = request.scope.get(TOKEN_NAME_SCOPE_KEY) or await authenticate(request)
    if name is None:
        raise HTTPException(
            status_code=401, detail="not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


TokenNameDep = Annotated[str, Depends(current_token_name)]
require_token = Depends(current_token_name)
