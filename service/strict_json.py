"""Strict JSON request bodies: no NaN/Infinity literals and no text that cannot be stored.

Python's ``json`` module accepts ``NaN``, ``Infinity`` and lone UTF-16 surrogates (``"\\ud800"``);
none of them survives a round trip through PostgreSQL or a JSON response. Routes built with
``StrictJsonRoute`` parse the body first and answer 422 naming the offending location.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from service.errors import validation_error

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON; send a finite number")


def _is_storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def first_bad_text(value: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...] | None:
    """Location of the first string (key or value) that UTF-8 cannot encode or that holds a NUL."""
    if isinstance(value, str):
        return None if _is_storable(value) else loc
    if isinstance(value, dict):
        for key, item in value.items():
            if not _is_storable(key):
                return loc
            found = first_bad_text(item, (*loc, key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = first_bad_text(item, (*loc, index))
            if found is not None:
                return found
    return None


async def check_body(request: Request) -> None:
    """Raise a 422 for a JSON body with non-standard constants or unstorable text (body stays cached)."""
    if "json" not in request.headers.get("content-type", ""):
        return
    body = await request.body()
    if not body:
        return
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            return  # FastAPI reports malformed JSON itself, with the position
        raise validation_error(("body",), str(error), "json_invalid") from error
    bad = first_bad_text(data, ("body",))
    if bad is not None:
        raise validation_error(bad, "text must be valid Unicode without NUL characters", "string_unicode")


class StrictJsonRoute(APIRoute):
    """An APIRoute that runs ``check_body`` before FastAPI parses and validates the body."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            await check_body(request)
            return await handler(request)

        return checked
