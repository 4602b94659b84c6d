"""Browser-test fixtures: the real service (uvicorn subprocess on a free port, temp data dir, the session's
local Ray) and headless Chromium (Debian's /usr/bin/chromium driven by Playwright).

Screenshots go to test-output/screenshots/ (gitignored) so a person can look at every page.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tiny_config import tiny

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("MMAE_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = REPO / "test-output" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# Digits runs small enough to finish in well under a minute on two CPU cores.
TINY_MMAE: dict[str, Any] = tiny(steps=60, checkpoint_every=20)
TINY_SIMCLR: dict[str, Any] = tiny(
    method="simclr", steps=40, **{"model.projector_hidden_dim": 64, "model.projector_dim": 32}
)


@dataclass(frozen=True)
class Service:
    url: str
    token: str
    data_dir: Path
    log: Path

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def wait_for_job(self, job_id: int, statuses: set[str], timeout_s: float = 120) -> dict[str, Any]:
        """Poll the API until the job reaches one of ``statuses``; else fail showing the service log."""
        deadline = time.monotonic() + timeout_s
        with self.api() as client:
            while True:
                job = client.get(f"/api/jobs/{job_id}").json()
                if job["status"] in statuses:
                    return job
                if time.monotonic() > deadline:
                    where = f"job {job_id} is {job['status']} after {timeout_s}s: {job.get('error')}"
                    pytest.fail(f"{where}\n{self.tail()}")
                time.sleep(0.5)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def live_service(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`uvicorn --factory service.api.main:create_app` with its scheduler, on the session's Ray head."""
    data_dir = tmp_path_factory.mktemp("web-service")
    log = data_dir / "server.log"
    port = free_port()
    env = {
        **os.environ,
        "MMAE_DATA_DIR": str(data_dir),
        "MMAE_RAY_ADDRESS": ray_cluster,
        "MMAE_MLFLOW_UI_URL": "http://127.0.0.1:5000",
        "MMAE_SCHEDULER_INTERVAL_S": "0.5",
        "MMAE_RECONCILE_INTERVAL_S": "1",
        "MMAE_STOP_GRACE_S": "10",
    }
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "service.api.main:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    service = Service(url=url, token="", data_dir=data_dir, log=log)
    try:
        wait_until_healthy(url, process, service)
        token = (data_dir / "admin-token").read_text().strip()
        yield Service(url=url, token=token, data_dir=data_dir, log=log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_healthy(
    url: str,
    process: subprocess.Popen[bytes],
    service: Service,
    timeout_s: float = 90,
    needs: tuple[str, ...] = ("database", "ray"),
) -> None:
    """Wait until ``/api/health`` reports every dependency in ``needs`` ok (a service run without Ray
    answers 503 naming Ray: ``needs=("database",)`` waits for its database only)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{service.tail()}")
        try:
            states = httpx.get(f"{url}/api/health", timeout=2).json()
            if all(states.get(name) == "ok" for name in needs):
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.3)
    pytest.fail(f"the service did not answer /api/health within {timeout_s}s:\n{service.tail()}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `make browser` installs Debian's chromium "
            "(or deselect these tests with -m 'not browser')"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@dataclass
class PageRecorder:
    """What a page did besides rendering: script errors, server errors, requests to other origins."""

    origin: str
    errors: list[str]
    foreign: list[str]

    def check(self) -> None:
        assert not self.foreign, f"requests left the service: {self.foreign}"
        assert not self.errors, f"errors while on the page: {self.errors}"


def open_page(browser: Any, service: Service, viewport: dict[str, int]) -> tuple[Any, Any, PageRecorder]:
    """A fresh browser context (no cookie) and page, recording errors and requests to other origins."""
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    record = PageRecorder(origin=service.url, errors=[], foreign=[])
    page.on("pageerror", lambda error: record.errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: _console(record, message))
    page.on("response", lambda response: _response(record, response))
    page.on("request", lambda request: _request(record, request))
    page.set_default_timeout(20_000)
    return context, page, record


def _console(record: PageRecorder, message: Any) -> None:
    # Chromium logs every 4xx/5xx response as "Failed to load resource"; 401 (no session) and 422
    # (validation) are normal answers here, and 5xx are caught by _response with their URL.
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        record.errors.append(f"console: {message.text}")


def _response(record: PageRecorder, response: Any) -> None:
    if response.status >= 500:
        record.errors.append(f"{response.status} from {response.request.method} {response.url}")


def _request(record: PageRecorder, request: Any) -> None:
    if not request.url.startswith(record.origin) and not request.url.startswith("data:"):
        record.foreign.append(request.url)


def login(page: Any, service: Service) -> None:
    page.goto(f"{service.url}/")
    page.fill("#login-token", service.token)
    page.press("#login-token", "Enter")
    page.wait_for_selector("#session:not([hidden])")


@pytest.fixture
def desktop(browser: Any, live_service: Service) -> Iterator[tuple[Any, PageRecorder]]:
    """A logged-in desktop page."""
    context, page, record = open_page(browser, live_service, DESKTOP)
    login(page, live_service)
    try:
        yield page, record
    finally:
        context.close()


@pytest.fixture
def phone(browser: Any, live_service: Service) -> Iterator[tuple[Any, PageRecorder]]:
    """A logged-in phone-sized page."""
    context, page, record = open_page(browser, live_service, PHONE)
    login(page, live_service)
    try:
        yield page, record
    finally:
        context.close()
