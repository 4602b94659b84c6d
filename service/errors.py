"""Error types the routes raise and the handlers that turn every failure into a clean JSON answer.

Validation errors keep FastAPI's shape (``{"detail": [{"loc", "msg", "type"}]}``) without echoing
inputs; anything unexpected is logged with its traceback and answered with a short 500 body.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm.exc import StaleDataError

from service.store.states import InvalidTransition

log = logging.getLogger(__name__)


class NotFound(LookupError):
    """An id that names no row; answered with 404 and the message."""


def validation_error(loc: Sequence[str | int], message: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 error for one field located by ``loc`` (e.g. ``("body", "parameters", "loss.mu")``)."""
    return RequestValidationError([{"type": kind, "loc": tuple(loc), "msg": message}])


def _clean(errors: Sequence[Any]) -> list[dict[str, Any]]:
    return [
        {
            "loc": list(error.get("loc", ())),
            "msg": str(error.get("msg", "")).removeprefix("Value error, "),
            "type": str(error.get("type", "")),
        }
        for error in errors
    ]


async def _on_validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": _clean(exc.errors())}, status_code=422)


async def _on_not_found(_request: Request, exc: NotFound) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _on_conflict(_request: Request, exc: InvalidTransition) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _on_stale(_request: Request, _exc: StaleDataError) -> JSONResponse:
    return JSONResponse({"detail": "the job changed while this request ran; read it again and retry"}, 409)


async def _on_database_down(request: Request, exc: OperationalError) -> JSONResponse:
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc.orig)
    return JSONResponse({"detail": "database unavailable, try again shortly"}, 503)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(NotFound, _on_not_found)
    app.add_exception_handler(InvalidTransition, _on_conflict)
    app.add_exception_handler(StaleDataError, _on_stale)
    app.add_exception_handler(OperationalError, _on_database_down)
    app.add_exception_handler(Exception, _on_unexpected)
