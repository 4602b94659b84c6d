"""A small REST client for the CLI: base URL and token from the environment, errors as one line.

``MMAE_API_URL`` (default http://127.0.0.1:8000) and ``MMAE_TOKEN``; without a token it falls back
to ``data_dir/admin-token``, written by the first ``mmae serve`` on this machine.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from service.auth import ADMIN_TOKEN_FILE
from service.settings import Settings

DEFAULT_API_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A failed call; ``exit_code`` is 2 for a request the server rejected, 1 otherwise."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def describe_detail(detail: Any) -> str:
    """One line from an error body: ``config.loss.mu: Input should be greater than 0`` or the message."""
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = [str(part) for part in first.get("loc", [])]
        where = ".".join(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
        more = f" (and {len(detail) - 1} more)" if len(detail) > 1 else ""
        return f"{where}: {first.get('msg', 'invalid')}{more}" if where else f"{first.get('msg')}{more}"
    return str(detail)


def resolve_token() -> str | None:
    token = os.environ.get("MMAE_TOKEN", "").strip()
    if token:
        return token
    path = Settings().data_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


class ApiClient:
    def __init__(self, base_url: str | None = None, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.base_url = (base_url or os.environ.get("MMAE_API_URL") or DEFAULT_API_URL).rstrip("/")
        token = token or resolve_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """JSON of a successful response; raises ``ApiError`` with one line otherwise."""
        response = self.send(method, path, **kwargs)
        return response.json() if response.content else None

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A successful response; raises ``ApiError`` with one line otherwise."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:
            raise ApiError(f"cannot reach the mmae API at {self.base_url}: {error}", 1) from error
        if response.status_code == 401:
            raise ApiError("not authenticated: set MMAE_TOKEN (see `mmae token create`)", 2)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text.strip() or response.reason_phrase
            raise ApiError(describe_detail(detail), 2 if response.status_code < 500 else 1)
        return response

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)
