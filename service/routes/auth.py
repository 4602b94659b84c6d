"""Health (public), login/logout (cookie) and the caller's identity."""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException, Request, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.auth import COOKIE_NAME, find_token
from service.deps import RayDep, SessionDep, TokenNameDep
from service.schemas import Health, LoginRequest, Me

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["auth"])

COOKIE_MAX_AGE_S = 30 * 24 * 3600


@router.get("/health")
def health(session: SessionDep, ray: RayDep) -> Health:
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as error:
        log.warning("health: database unavailable: %s", error)
        database = "unavailable"
    return Health(database=database, ray="ok" if ray.is_available() else "unavailable")


@router.post("/login")
def login(body: LoginRequest, session: SessionDep, request: Request, response: Response) -> Me:
    row = find_token(session, body.token)
    if row is None:
        raise HTTPException(status_code=401, detail="invalid token")
    response.set_cookie(
        COOKIE_NAME,
        body.token,
        max_age=COOKIE_MAX_AGE_S,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return Me(name=row.name)


@router.post("/logout", status_code=204)
def logout(response: Response) -> None:
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")


@router.get("/me")
def me(name: TokenNameDep) -> Me:
    return Me(name=name)
