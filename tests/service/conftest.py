"""API fixtures: an app on a real database (SQLite file or this session's PostgreSQL), no scheduler, and
the ``mmae`` command run in-process against it.

``database_url`` is parametrized over both backends (``migrated_url`` in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.auth import ADMIN_TOKEN_FILE
from service.cli import main
from service.settings import Settings
from tests.tiny_config import TINY

Cli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def database_url(migrated_url: str) -> str:
    """A real database (parametrized: SQLite file, this session's PostgreSQL) at the newest migration."""
    return migrated_url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        mlflow_ui_url="http://mlflow.example:5000",
        run_scheduler=False,
    )


@pytest.fixture
def anonymous(settings: Settings) -> Iterator[TestClient]:
    """A client of a started app, without credentials."""
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def admin_token(anonymous: TestClient, settings: Settings) -> str:
    return (settings.data_dir / ADMIN_TOKEN_FILE).read_text().strip()


@pytest.fixture
def client(anonymous: TestClient, admin_token: str) -> TestClient:
    """The same app, authenticated with the admin token minted at first start."""
    anonymous.headers["Authorization"] = f"Bearer {admin_token}"
    return anonymous


@pytest.fixture
def submit(client: TestClient) -> Callable[..., dict[str, Any]]:
    """POST a tiny job (fields override the defaults) and return the created Job JSON."""

    def post(**fields: Any) -> dict[str, Any]:
        body = {"config": TINY} | fields
        response = client.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    return post


@pytest.fixture
def cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    """``mmae ARG...`` in this process: ``cli("status")`` -> (exit status, stdout, stderr). The token commands,
    which talk to the database directly, find this test's (``MMAE_DATA_DIR``, ``MMAE_DATABASE_URL``)."""
    monkeypatch.setenv("MMAE_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("MMAE_DATABASE_URL", settings.resolved_database_url)

    def run(*argv: str) -> tuple[int, str, str]:
        try:
            code = main(list(argv))
        except SystemExit as exit_:
            code = int(exit_.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
