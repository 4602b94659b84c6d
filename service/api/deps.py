"""FastAPI dependencies: everything a route needs comes from ``app.state``, set up by the lifespan.

Dependencies that only read ``app.state`` are ``async``: FastAPI runs a sync dependency in its
threadpool, and each such hop costs a thread handoff per request. The busiest read routes (the job
list, a job, its metrics and events, a sweep's report) are ``async`` too and do all of their database
work in one ``Reads.run`` call; the other routes are sync, on a request session (``SessionDep``) in
FastAPI's threadpool.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session
from starlette.requests import HTTPConnection

from service.auth import (
    COOKIE_NAME,
    Principal,
    Role,
    TokenCache,
    cache_key,
    credential_key,
    identify_session,
    identify_token,
)
from service.cluster.ray_client import RayClient
from service.scheduling.context import SchedulerContext
from service.settings import Settings
from service.store.db import Reads

PRINCIPAL_SCOPE_KEY = "mmae.principal"  # where service.api.gate leaves the authenticated Principal in a request's scope


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


async def get_scheduler_context(request: Request) -> SchedulerContext:
    """The Ray client, settings and tracker this process's requests hand to the scheduler's functions."""
    state = request.app.state
    return SchedulerContext(state.ray, state.settings, state.tracker)


async def get_scheduler_wake(request: Request) -> Callable[[], None]:
    """Admit queued jobs now: this process's scheduler loop when it leads, else a notice to the leader."""
    return request.app.state.scheduler.wake


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ReadsDep = Annotated[Reads, Depends(get_reads)]
RayDep = Annotated[RayClient, Depends(get_ray)]
SchedulerContextDep = Annotated[SchedulerContext, Depends(get_scheduler_context)]
WakeSchedulerDep = Annotated[Callable[[], None], Depends(get_scheduler_wake)]


async def authenticate(connection: HTTPConnection) -> Principal | None:
    """Who the caller is: the live token of the bearer header, else the cookie's live login session (and
    its live token); None when neither. Reads no body.

    Verified credentials are remembered for a few seconds (``TokenCache``), so most requests skip the
    lookup (an indexed one, on the secret's hash, in a worker thread, shared by the requests that wait for
    it); an expiry is checked on every request, cached or not.
    """
    credential = credential_key(connection.headers.get("authorization"), connection.cookies.get(COOKIE_NAME))
    if credential is None:
        return None
    kind, secret = credential
    state = connection.app.state
    cache: TokenCache = state.token_cache
    identify = identify_token if kind == "token" else identify_session

    async def lookup() -> Principal | None:
        reads: Reads = state.reads
        return await reads.run(identify, secret)  # its own short session: a stream must not pin one

    principal = await cache.principal(cache_key(kind, secret), lookup)
    return None if principal is None or principal.expired() else principal


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def current_principal(request: Request) -> Principal:
    """The caller: the one ``service.api.gate`` found before the body was read, else looked up here (a route
    outside the gate's protected paths); 401 when missing, unknown, expired or revoked, 403 when a
    ``read`` token asks to change something."""
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY) or await authenticate(request)
    if principal is None:
        raise HTTPException(status_code=401, detail="not authenticated", headers={"WWW-Authenticate": "Bearer"})
    if principal.role is Role.READ and request.method not in SAFE_METHODS:
        raise HTTPException(
            status_code=403,
            detail=f"token '{principal.name}' has the read role: it cannot {request.method} {request.url.path}",
        )
    return principal


def ensure_may_change(principal: Principal, owner: str | None, what: str) -> None:
    """403 naming the reason unless ``principal`` may cancel, retry or reprioritise ``what`` (an admin
    token, or a user token of its ``owner``)."""
    if not principal.may_change(owner):
        belongs = f"belongs to '{owner}'" if owner is not None else "has no owner (only admins change it)"
        raise HTTPException(
            status_code=403,
            detail=f"{what} {belongs}; token '{principal.name}' ({principal.role} of '{principal.owner}') "
            "changes only its owner's work",
        )


PrincipalDep = Annotated[Principal, Depends(current_principal)]
require_token = Depends(current_principal)
