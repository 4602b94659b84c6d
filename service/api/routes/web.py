"""The web UI: one HTML shell at ``/`` and its static files (ES modules, CSS, vendored uPlot) at ``/static``.

The shell and its assets carry no data and need no token; every view fetches its data from the
authenticated REST API under ``/api`` and shows the login form on a 401. Everything is served from
this app (no CDN), and the Content-Security-Policy keeps it that way.
"""

from __future__ import annotations

import os
from os import PathLike
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.responses import Response
from starlette.types import Scope

WEB_DIR = Path(__file__).resolve().parents[2] / "web"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",  # uPlot positions its legend and cursor with inline styles
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ]
)


class RevalidatedStaticFiles(StaticFiles):
    """Static files the browser must revalidate (ETag -> 304), so an upgrade never runs stale modules."""

    def file_response(
        self,
        full_path: PathLike[str] | str,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


router = APIRouter(include_in_schema=False)
router.mount("/static", RevalidatedStaticFiles(directory=WEB_DIR / "static"), name="static")


@router.get("/")
def index() -> FileResponse:
    """The single-page shell; views are chosen by the URL hash (``#/runs/12``)."""
    return FileResponse(
        WEB_DIR / "index.html",
        media_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
        },
    )
