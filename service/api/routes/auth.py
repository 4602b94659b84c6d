"""Login/logout (a login session named by a cookie) and the caller's identity."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException, Request, Response

from service.api.deps import PrincipalDep, SessionDep
from service.auth import (
    COOKIE_NAME,
    Principal,
    cache_key,
    create_login_session,
    end_login_session,
    find_token,
    principal_of,
)
from service.schemas import LoginRequest, Me
from service.store.clock import utcnow

router = APIRouter(prefix="/api", tags=["auth"])

SESSION_LIFETIME = timedelta(days=30)  # a login session ends then, or when its token does if sooner


@router.post("/login")
def login(body: LoginRequest, session: SessionDep, request: Request, response: Response) -> Me:
    """Open a login session for a live token and name it in an HttpOnly cookie (the token is not stored)."""
    row = find_token(session, body.token)
    if row is None:
        raise HTTPException(status_code=401, detail="invalid token")
    secret, ends = create_login_session(session, row.id, SESSION_LIFETIME)
    principal = principal_of(row, ends)
    session.commit()
    response.set_cookie(
        COOKIE_NAME,
        secret,
        max_age=int(((principal.expires_at or ends) - utcnow()).total_seconds()),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return me_of(principal)


@router.post("/logout", status_code=204)
def logout(session: SessionDep, request: Request, response: Response) -> None:
    """End the cookie's login session: the cookie stops working even if replayed (the token stays valid)."""
    secret = request.cookies.get(COOKIE_NAME)
    if secret:
        end_login_session(session, secret)
        session.commit()
        request.app.state.token_cache.drop(cache_key("session", secret))
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")


@router.get("/me")
def me(principal: PrincipalDep) -> Me:
    return me_of(principal)


def me_of(principal: Principal) -> Me:
    return Me(name=principal.name, role=principal.role, owner=principal.owner, expires_at=principal.expires_at)
