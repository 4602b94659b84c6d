"""The sweep page's Report view in headless Chromium: a real mu x seed sweep trained through the service, its
report opened from the sweep page's link, checked against what the cells recorded, and photographed into
test-output/screenshots/report-desktop.png."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import TINY_MMAE, Service
from tests.web.test_browser import TERMINAL, shoot

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.slow]


def test_report_view_of_a_real_sweep(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    with live_service.api() as client:
        response = client.post(
            "/api/sweeps",
            json={
                "name": "web-report-mu",
                "base_config": TINY_MMAE,
                "max_concurrency": 4,
                "parameters": {"loss.mu": {"values": [1.0, 3.0]}, "seed": {"values": [0, 1]}},
            },
        )
        assert response.status_code == 201, response.text
        sweep = response.json()
        cells = client.get(f"/api/sweeps/{sweep['id']}/table").json()["rows"]
    jobs = [live_service.wait_for_job(cell["job_id"], TERMINAL, timeout_s=240) for cell in cells]
    assert {job["status"] for job in jobs} == {"succeeded"}, [job.get("error") for job in jobs]

    requests: list[str] = []
    page.context.on("request", lambda request: requests.append(request.url))
    page.goto(f"{live_service.url}/#/sweeps/{sweep['id']}")
    page.wait_for_selector(".sweep-page [data-action=report]")
    with page.context.expect_page() as opened:
        page.click("[data-action=report]")
    report = opened.value
    report.wait_for_selector("table.results")

    rows = report.locator("table.results tbody tr")
    assert rows.count() == 2, "one row per mu, seeds averaged"
    mu1 = rows.nth(0).inner_text()
    assert "2/2 succeeded" in mu1 and "±" in mu1 and "62.40" in mu1, mu1  # Table 2's ViT-B value beside ours
    assert "50.46" in rows.nth(1).inner_text()
    assert report.locator("text=paper (Table 2): ViT-B, ImageNet-1K, 200 ep, batch 1024").count() == 1
    assert report.locator('figure[data-metric="info/erank"] polyline').count() == len(cells)
    assert report.locator("table.cells tbody tr").count() == len(cells)
    shoot(report, screenshots, "report-desktop")
    foreign = [url for url in requests if not url.startswith(live_service.url) and not url.startswith("data:")]
    assert not foreign, f"the report loaded something from elsewhere: {foreign}"
    record.check()
