"""Login/logout (cookie) and the caller's identity."""

from __future__ import annotations


from fastapi import APIRouter, HTTPException, Request, Response

from service.auth import COOKIE_NAME, find_token
from service.deps import SessionDep, TokenNameDep
from service.schemas import LoginRequest, Me

router = APIRouter(prefix="/api", tags=["auth"])

COOKIE_MAX_AGE_S = 30 * 24 * 3600


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
