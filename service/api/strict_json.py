"""Strict JSON request bodies: no NaN/Infinity literals, no text that cannot be stored, bounded nesting.

Python's ``json`` module accepts ``NaN``, ``Infinity`` and lone UTF-16 surrogates (``"\\ud800"``);
none of them survives a round trip through PostgreSQL or a JSON response, and a document nested a
thousand levels deep makes it raise ``RecursionError``. Routes built with ``StrictJsonRoute`` parse
every body FastAPI would parse as JSON (``application/json`` or ``application/*+json``, in any case,
with any parameters) first and answer 422 naming the offending location. Finite-number bounds are the
request models' (``allow_inf_nan=False``), so ``1e999`` is refused at its field.
"""

from __future__ import annotations

import email.message
import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from service.errors import validation_error

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Location = tuple[str | int, ...]
MAX_JSON_DEPTH = 32  # arrays and objects inside each other; a sweep request needs 5, a config 3
TOO_DEEP = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
UNSTORABLE = "text must be valid Unicode without NUL characters"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON; send a finite number")


def _is_storable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def first_problem(value: Any) -> tuple[Location, str, str] | None:
    """``(loc, message, type)`` of the first place, in document order, where the parsed body ``value`` nests
    deeper than ``MAX_JSON_DEPTH`` or holds a string (key or value) that UTF-8 cannot encode or with a NUL.

    Walks with its own stack, so no depth of input can exhaust Python's.
    """
    pending: list[tuple[Any, Location]] = [(value, ("body",))]
    while pending:
        item, loc = pending.pop()
        if isinstance(item, str) and not _is_storable(item):
            return loc, UNSTORABLE, "string_unicode"
        if not isinstance(item, dict | list):
            continue
        if len(loc) > MAX_JSON_DEPTH:  # loc is "body" plus one step per enclosing container
            return loc, TOO_DEEP, "json_invalid"
        if isinstance(item, dict) and not all(_is_storable(key) for key in item):
            return loc, UNSTORABLE, "string_unicode"
        children = item.items() if isinstance(item, dict) else enumerate(item)
        pending.extend((child, (*loc, key)) for key, child in reversed(list(children)))
    return None


def is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of this ``Content-Type`` as JSON (its own test, case-insensitive)."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def check_body(request: Request) -> None:
    """Raise a 422 for a JSON body with non-standard constants, unstorable text or too deep nesting (the
    body stays cached for FastAPI)."""
    if not is_json(request.headers.get("content-type")):
        return
    body = await request.body()
    if not body:
        return
    try:
        data = json.loads(body, parse_constant=_reject_constant)
    except RecursionError as error:  # the parser's own limit, far past MAX_JSON_DEPTH
        raise validation_error(("body",), TOO_DEEP, "json_invalid") from error
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            return  # FastAPI reports malformed JSON itself, with the position
        raise validation_error(("body",), str(error), "json_invalid") from error
    problem = first_problem(data)
    if problem is not None:
        raise validation_error(*problem)


class StrictJsonRoute(APIRoute):
    """An APIRoute that runs ``check_body`` before FastAPI parses and validates the body."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def checked(request: Request) -> Response:
            await check_body(request)
            return await handler(request)

        return checked
