"""The web UI is served by the app itself, offline: the shell and every asset come from /static."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.api.routes.web import WEB_DIR
from service.settings import Settings

STATIC = WEB_DIR / "static"
OUR_FILES = [
    WEB_DIR / "index.html",
    *sorted((STATIC / "js").rglob("*.js")),
    *sorted((STATIC / "css").rglob("*.css")),
]


@pytest.fixture
def anonymous(tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(
        data_dir=tmp_path / "data",
        mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
        run_scheduler=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def test_shell_and_assets_need_no_token(anonymous: TestClient) -> None:
    page = anonymous.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        asset = anonymous.get(src)
        assert asset.status_code == 200, src
        assert asset.headers["cache-control"] == "no-cache"
    assert anonymous.get("/static/js/app.js").headers["content-type"].startswith("text/javascript")


def test_data_needs_a_token(anonymous: TestClient) -> None:
    assert anonymous.get("/api/jobs").status_code == 401
    assert anonymous.get("/api/jobs/1/events").status_code == 401


def test_every_module_the_app_imports_is_served(anonymous: TestClient) -> None:
    for path in OUR_FILES:
        if path.suffix != ".js":
            continue
        for target in re.findall(r'(?:from|import\()\s*"(\.{1,2}/[^"]+)"', path.read_text()):
            resolved = (path.parent / target).resolve().relative_to(STATIC.resolve())
            assert anonymous.get(f"/static/{resolved.as_posix()}").status_code == 200, f"{path.name} -> {target}"


def test_nothing_is_loaded_from_another_origin() -> None:
    for path in OUR_FILES:
        text = path.read_text()
        assert not re.search(r"https?://", text), f"{path.name} names an external URL"
        assert "@import" not in text and "fonts.googleapis" not in text
    vendor = (STATIC / "vendor" / "uplot" / "uPlot.min.css").read_text()
    assert "url(" not in vendor and "@import" not in vendor


def test_vendored_chart_library_is_complete() -> None:
    folder = STATIC / "vendor" / "uplot"
    assert (folder / "LICENSE").read_text().startswith("The MIT License")
    assert "v1.6.32" in (folder / "uPlot.iife.min.js").read_text()[:200]
    assert (folder / "uPlot.min.css").stat().st_size > 1000
