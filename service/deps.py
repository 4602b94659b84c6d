"""FastAPI dependencies: everything a route needs comes from ``app.state``, set up by the lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Cookie, Depends, Header, HTTPException, Request
from sqlalchemy.orm import Session, sessionmaker

from service.auth import COOKIE_NAME, TokenCache, find_token, hash_token, token_from_headers
from service.ray_client import RayClient
from service.settings import Settings
from service.tracking import Tracker


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.session_factory


def get_session(request: Request) -> Iterator[Session]:
    """One session per request, closed (and rolled back if uncommitted) when the request ends."""
    with request.app.state.session_factory() as session:
        yield session


def get_ray(request: Request) -> RayClient:
    return request.app.state.ray


def get_tracker(request: Request) -> Tracker:
    return request.app.state.tracker


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]
RayDep = Annotated[RayClient, Depends(get_ray)]
TrackerDep = Annotated[Tracker, Depends(get_tracker)]


def current_token_name(
    request: Request,
    factory: SessionFactoryDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    mmae_token: Annotated[str | None, Cookie(alias=COOKIE_NAME, include_in_schema=False)] = None,
) -> str:
    """The name of the caller's token (bearer header or cookie); 401 when missing, unknown or revoked.

    Verified tokens are remembered for a few seconds (``TokenCache``), so most requests skip the lookup.
    """
    token = token_from_headers(authorization, mmae_token)
    cache: TokenCache = request.app.state.token_cache
    name = cache.get(hash_token(token)) if token else None
    if name is None and token:
        with factory() as session:  # its own short session: a stream must not pin a connection
            row = find_token(session, token)
        if row is not None:
            name = row.name
            cache.put(hash_token(token), name)
    if name is None:
        raise HTTPException(
            status_code=401, detail="not authenticated", headers={"WWW-Authenticate": "Bearer"}
        )
    return name


TokenNameDep = Annotated[str, Depends(current_token_name)]
require_token = Depends(current_token_name)
