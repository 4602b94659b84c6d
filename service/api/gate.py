"""The gate every HTTP request passes before any of its body is read: authentication, then a size bound.

A pure-ASGI middleware, so nothing (FastAPI's body parsing, the strict-JSON check, a route) can read
the body first:

1. A path under ``/api/`` other than ``PUBLIC_API_PATHS`` needs a live token (``service.api.deps.authenticate``
   on the headers alone); without one the answer is 401 and the body is never received. The principal
   found is left in the request's scope for the routes' own token dependency.
2. A body longer than ``max_body_bytes`` is a 413: at once when ``Content-Length`` says so, else as soon
   as the bytes received pass the limit (a chunked upload is read no further).

Pages and static files outside ``/api/`` carry no secrets and pass without a token (the web page asks
for one); they are still size-bounded.
"""

from __future__ import annotations

from fastapi import HTTPException
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.deps import PRINCIPAL_SCOPE_KEY, authenticate

PUBLIC_API_PATHS = frozenset({"/api/health", "/api/login", "/api/logout"})


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when the body outgrows the limit; FastAPI answers it with a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body larger than {limit} bytes")


def needs_token(scope: Scope) -> bool:
    """Whether the request's path, as the router sees it (below any ``root_path``), is a protected API path."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(f"{root}/"):
        path = path.removeprefix(root)
    return (path == "/api" or path.startswith("/api/")) and path not in PUBLIC_API_PATHS


def declared_length(scope: Scope) -> int | None:
    """The request's ``Content-Length`` as a number, or None when absent or not a number."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None


async def answer_failure(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """Answer ``error`` with the app's handler for its class (``service.errors``), as if a route raised it."""
    handlers = scope["app"].exception_handlers
    handler = next((handlers[kind] for kind in type(error).__mro__ if kind in handlers), None)
    if handler is None:
        raise error
    response = await handler(Request(scope, receive), error)
    await response(scope, receive, send)


class RequestGate:
    """ASGI middleware: 401 without a token on protected paths, 413 over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if needs_token(scope):
            try:
                principal = await authenticate(HTTPConnection(scope))
            except Exception as error:  # e.g. the database is down: answered as a route's failure would be
                await answer_failure(scope, receive, send, error)
                return
            if principal is None:
                headers = {"WWW-Authenticate": "Bearer"}
                await JSONResponse({"detail": "not authenticated"}, 401, headers)(scope, receive, send)
                return
            scope[PRINCIPAL_SCOPE_KEY] = principal
        length = declared_length(scope)
        if length is not None and length > self.max_body_bytes:
            detail = str(BodyTooLarge(self.max_body_bytes).detail)
            await JSONResponse({"detail": detail}, 413)(scope, receive, send)
            return
        await self.app(scope, self.bounded(receive), send)

    def bounded(self, receive: Receive) -> Receive:
        """``receive`` that raises ``BodyTooLarge`` once the body chunks add up to more than the limit."""
        received = 0

        async def bounded_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        return bounded_receive
