"""End-to-end tests of the web UI in headless Chromium against the real service, Ray and training.

Each test drives the page as a person would (login form, submit form, buttons) and checks what the
page drew against what the API says. The tests share one service and run in file order: the later
ones (compare, phone layout) look at the runs the earlier ones trained. Screenshots of every page,
desktop and phone, land in test-output/screenshots/.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from service.store.states import TERMINAL
from tests.web.conftest import DESKTOP, PHONE, TINY_MMAE, TINY_SIMCLR, Service, login, open_page

pytestmark = [pytest.mark.browser, pytest.mark.ray, pytest.mark.slow]


def points(page: Any, chart: str) -> int:
    """Points the chart drew (its data-points attribute; 0 or missing while empty)."""
    value = page.get_attribute(f'[data-chart="{chart}"]', "data-points")
    return int(value or 0)


def uplot_data(page: Any, chart: str) -> list[list[float | None]]:
    """The data arrays of the chart's uPlot instance: [x, series 1, series 2, ...]."""
    return page.evaluate('(id) => document.querySelector(`[data-chart="${id}"]`)._uplot.data', chart)


def uplot_lengths(page: Any, chart: str) -> list[int]:
    return [len(values) for values in uplot_data(page, chart)]


def painted_pixels(page: Any, chart: str, rgb: tuple[int, int, int]) -> int:
    """How many canvas pixels are (close to) the series colour: an empty plot has none."""
    return page.evaluate(
        """([id, rgb]) => {
            const canvas = document.querySelector(`[data-chart="${id}"] canvas`);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let n = 0;
            for (let i = 0; i < pixels.length; i += 4) {
                const close = Math.abs(pixels[i] - rgb[0]) + Math.abs(pixels[i + 1] - rgb[1])
                    + Math.abs(pixels[i + 2] - rgb[2]) < 60;
                if (close && pixels[i + 3] > 200) n += 1;
            }
            return n;
        }""",
        [chart, list(rgb)],
    )


FIRST_SERIES_RGB = (0x1F, 0x6F, 0xD1)  # charts.js PALETTE[0]


def shoot(page: Any, folder: Path, name: str) -> None:
    """Save the whole page, or only the window when the page is too long to look at in one picture."""
    page.wait_for_timeout(300)  # let uPlot finish a resize
    height = page.evaluate("() => document.documentElement.scrollHeight")
    page.screenshot(path=str(folder / f"{name}.png"), full_page=height <= 4000)


def open_sections(page: Any, is_open: bool) -> None:
    """Open (or close) every config section of the submit form."""
    page.evaluate(
        "(open) => document.querySelectorAll('details.config-section').forEach((d) => { d.open = open; })",
        is_open,
    )


def no_sideways_scroll(page: Any) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"the page scrolls sideways: {width}"


def submit_api(service: Service, config: dict[str, Any], **fields: Any) -> dict[str, Any]:
    with service.api() as client:
        response = client.post("/api/jobs", json={"config": config, **fields})
    assert response.status_code == 201, response.text
    return response.json()


def test_nothing_is_visible_without_a_token(browser: Any, live_service: Service, screenshots: Path) -> None:
    context, page, record = open_page(browser, live_service, DESKTOP)
    try:
        never_fits = {"num_cpus": 512}
        job = submit_api(live_service, {**TINY_MMAE, "steps": 1}, name="private-run", resources=never_fits)
        page.goto(f"{live_service.url}/#/runs/{job['id']}")
        page.wait_for_selector("#login-form")
        assert page.locator("table").count() == 0
        assert "private-run" not in page.content()
        assert page.evaluate("() => fetch('/api/jobs').then((r) => r.status)") == 401
        shoot(page, screenshots, "login-desktop")

        page.fill("#login-token", "mmae_not-a-real-token")
        page.press("#login-token", "Enter")
        page.wait_for_selector("#login-error:has-text('not valid')")
        assert page.get_attribute("#login-token", "aria-invalid") == "true"

        page.fill("#login-token", live_service.token)
        page.click("#login-form button[type=submit]")
        page.wait_for_selector(f"[data-job-id='{job['id']}'] h1")  # back on the page asked for
        assert "private-run" in page.inner_text("h1")
        page.click("#logout")
        page.wait_for_selector("#login-form")
        assert page.evaluate("() => fetch('/api/me').then((r) => r.status)") == 401
        record.check()
    finally:
        context.close()


def test_submit_digits_job_from_the_form_and_watch_it_train(
    desktop: Any, live_service: Service, screenshots: Path
) -> None:
    page, record = desktop
    page.click("nav >> text=Submit")
    page.wait_for_selector("#submit-form")
    examples = page.eval_on_selector_all("#submit-example option", "(options) => options.map((o) => o.value)")
    digits = [name for name in examples if "digits" in name]
    if digits:
        page.select_option("#submit-example", digits[0])
    open_sections(page, True)
    page.fill("#f-name", "web-digits")
    page.select_option("#f-config-method", "mmae")
    page.select_option("#f-config-data-dataset", "digits")
    for field, value in {
        "steps": 60,
        "checkpoint_every": 20,
        "data-batch_size": 64,
        "model-depth": 1,
        "model-decoder_dim": 32,
        "model-decoder_depth": 1,
        "monitor-every": 5,
        "eval-linear_epochs": 2,
        "eval-finetune_epochs": 0,
    }.items():
        page.fill(f"#f-config-{field}", str(value))
    shoot(page, screenshots, "submit-desktop")
    page.click("#submit-form button[type=submit]")
    page.wait_for_url(re.compile(r".*#/runs/\d+$"))
    job_id = int(page.url.rsplit("/", 1)[1])

    # Live: the loss curve grows while the run trains (SSE), before the run is over.
    seen: set[int] = set()
    deadline = time.monotonic() + 150
    while page.get_attribute(".run-page", "data-job-status") not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job_id} did not finish:\n{live_service.tail()}"
        if page.locator('[data-chart="loss"]').count():
            seen.add(points(page, "loss"))
        page.wait_for_timeout(250)
    assert page.get_attribute(".run-page", "data-job-status") == "succeeded", live_service.tail()
    assert len(seen - {0}) >= 2, f"the loss curve never grew while training: {sorted(seen)}"
    page.wait_for_timeout(1500)  # the final downsampled refetch

    with live_service.api() as client:
        job = client.get(f"/api/jobs/{job_id}").json()
        api_loss = client.get(f"/api/jobs/{job_id}/metrics", params={"names": "train/loss"}).json()
    assert job["name"] == "web-digits" and job["config"]["steps"] == 60
    steps = len(api_loss["series"]["train/loss"]["steps"])
    assert steps == 60
    assert uplot_lengths(page, "loss")[:2] == [60, 60]
    assert points(page, "loss") >= 60
    for chart in ("loss", "lr", "erank", "tcr", "probe"):
        assert points(page, chart) > 0, chart
        assert painted_pixels(page, chart, FIRST_SERIES_RGB) > 30, f"{chart} canvas looks empty"
    linear = page.locator("tr:has(code:text-is('eval/linear_top1')) td.num").inner_text()
    assert linear == f"{job['summary']['eval/linear_top1'] * 100:.1f}%"
    assert page.get_attribute("a:has-text('MLflow run')", "href").endswith(job["mlflow_run_id"])
    assert page.locator("[data-action=cancel]").count() == 0
    collapsed = page.locator(".notice.warning:has-text('Representation collapse')").count() == 1
    assert collapsed == bool(job["collapse"]["collapsed"])
    shoot(page, screenshots, "run-desktop")
    record.check()


def test_validation_errors_are_shown_next_to_their_fields(desktop: Any, live_service: Service) -> None:
    page, record = desktop
    with live_service.api() as client:
        before = client.get("/api/jobs").json()["total"]
    page.goto(f"{live_service.url}/#/submit")
    page.wait_for_selector("#submit-form")
    open_sections(page, False)
    page.click("summary:text-is('Run')")
    page.click("summary:text-is('loss')")
    page.fill("#f-config-loss-mu", "-1")
    page.fill("#f-config-steps", "abc")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector(".error-summary")
    assert page.is_visible("#f-config-loss-mu-error")
    assert "greater than 0" in page.inner_text("#f-config-loss-mu-error")
    assert page.get_attribute("#f-config-loss-mu", "aria-invalid") == "true"
    assert page.inner_text("#f-config-steps-error")
    assert page.evaluate("() => document.activeElement.classList.contains('error-summary')")
    page.click(".error-summary button:has-text('config.loss.mu')")
    assert page.evaluate("() => document.activeElement.id") == "f-config-loss-mu"
    with live_service.api() as client:
        assert client.get("/api/jobs").json()["total"] == before
    record.check()


def test_sweep_page_plots_one_point_per_cell(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    temperatures = [0.3, 0.5, 0.7]  # the paper's Fig. 3
    with live_service.api() as client:
        response = client.post(
            "/api/sweeps",
            json={
                "name": "web-temperature",
                "base_config": TINY_SIMCLR,
                "max_concurrency": 3,
                "parameters": {"loss.temperature": {"values": temperatures}},
            },
        )
        assert response.status_code == 201, response.text
        sweep = response.json()
        cells = client.get(f"/api/sweeps/{sweep['id']}/table").json()["rows"]
    page.goto(f"{live_service.url}/#/sweeps/{sweep['id']}")
    page.wait_for_selector(".sweep-page")
    for cell in cells:
        live_service.wait_for_job(cell["job_id"], TERMINAL, timeout_s=180)
    page.wait_for_selector('.cells-table tbody tr:nth-child(3) [data-status="succeeded"]', timeout=30_000)
    page.wait_for_function(
        "() => document.querySelector('[data-chart=\"param-eval/linear_top1\"]')?.dataset.points === '3'",
        timeout=30_000,
    )
    assert page.locator(".cells-table tbody tr").count() == 3
    for metric in ("eval/linear_top1", "info/mi_corr_a1", "info/erank"):
        assert points(page, f"param-{metric}") == len(temperatures), metric
        assert uplot_lengths(page, f"param-{metric}")[0] == len(temperatures)
    assert painted_pixels(page, "param-info/mi_corr_a1", FIRST_SERIES_RGB) > 30
    assert uplot_data(page, "param-info/mi_corr_a1")[0] == temperatures
    page.wait_for_selector('[data-chart="sweep-curves"][data-series="3"]', timeout=30_000)
    assert page.is_disabled("[data-action=retry-failed]")
    shoot(page, screenshots, "sweep-desktop")
    record.check()


def test_retry_failed_cells(desktop: Any, live_service: Service) -> None:
    page, record = desktop
    with live_service.api() as client:
        response = client.post(
            "/api/sweeps",
            json={
                "name": "web-never-fits",
                "base_config": TINY_SIMCLR,
                "resources": {"num_cpus": 512},
                "parameters": {"loss.temperature": {"values": [0.2, 0.4]}},
            },
        )
        sweep = response.json()
        cells = client.get(f"/api/sweeps/{sweep['id']}/table").json()["rows"]
    for cell in cells:
        live_service.wait_for_job(cell["job_id"], {"failed"}, timeout_s=60)
    page.goto(f"{live_service.url}/#/sweeps/{sweep['id']}")
    page.wait_for_selector("[data-action=retry-failed]:not([disabled])")
    page.click("[data-action=retry-failed]")
    message = page.inner_text(".notice.success:has-text('Retried 2 failed cells')")
    assert sorted(int(n) for n in re.findall(r"#(\d+)", message)) == sorted(cell["job_id"] for cell in cells)
    for cell in cells:  # re-queued, and (still too big for any node) failed again
        live_service.wait_for_job(cell["job_id"], {"failed"}, timeout_s=60)
    record.check()


def test_cancel_a_running_job(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    long_run = {**TINY_MMAE, "steps": 5000, "eval": {"enabled": False}}
    job = submit_api(live_service, long_run, name="web-cancel")
    page.goto(f"{live_service.url}/#/runs/{job['id']}")
    page.wait_for_selector(".run-page[data-job-status=running]", timeout=90_000)
    page.wait_for_selector('[data-chart="loss"] canvas', timeout=60_000)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("[data-action=cancel]")
    page.wait_for_selector(".run-page[data-job-status=cancelled]", timeout=90_000)
    assert page.locator("[data-action=retry]").count() == 1
    assert live_service.wait_for_job(job["id"], {"cancelled"}, timeout_s=5)["status"] == "cancelled"
    shoot(page, screenshots, "run-cancelled-desktop")
    record.check()


def test_runs_list_filters_sorts_and_pages(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    ids = [
        submit_api(
            live_service,
            {**TINY_MMAE, "seed": i},
            name=f"web-page-{i:02d}",
            tags=["paging"],
            resources={"num_cpus": 512},
        )["id"]
        for i in range(55)
    ]
    live_service.wait_for_job(ids[-1], {"failed"}, timeout_s=60)
    page.goto(f"{live_service.url}/#/runs?tag=paging")
    page.wait_for_selector(".pager-count:has-text('of 55')")
    assert page.locator(".runs-table tbody tr").count() == 50
    page.click("button[aria-label='Next page']")
    page.wait_for_selector(".pager-count:has-text('51–55 of 55')")
    assert page.locator(".runs-table tbody tr").count() == 5
    assert "offset=50" in page.url

    page.click("th[data-sort=name] button")
    page.wait_for_selector("th[data-sort=name][aria-sort=descending]")
    names = page.eval_on_selector_all(".runs-table td.name a", "(links) => links.map((a) => a.textContent)")
    assert names[0] == "web-page-54"
    page.click("th[data-sort=name] button")
    page.wait_for_selector("th[data-sort=name][aria-sort=ascending]")
    names = page.eval_on_selector_all(".runs-table td.name a", "(links) => links.map((a) => a.textContent)")
    assert names[:2] == ["web-page-00", "web-page-01"]

    page.goto(f"{live_service.url}/#/runs")
    page.select_option("#f-status", "succeeded")
    page.wait_for_function("() => location.hash.includes('status=succeeded')")
    page.wait_for_timeout(500)
    statuses = page.eval_on_selector_all(".runs-table [data-status]", "(b) => b.map((x) => x.dataset.status)")
    assert statuses and set(statuses) == {"succeeded"}
    with live_service.api() as client:
        listed = client.get("/api/jobs", params={"status": "succeeded"}).json()["items"]
    rows = page.query_selector_all(".runs-table tr.collapsed")
    flagged = {int(row.get_attribute("data-job-id")) for row in rows}
    assert flagged == {job["id"] for job in listed if job["collapse"]["collapsed"]}
    page.select_option("#f-status", "")
    page.wait_for_timeout(500)
    shoot(page, screenshots, "runs-desktop")
    record.check()


def test_compare_overlays_the_selected_runs(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    with live_service.api() as client:
        done = client.get("/api/jobs", params={"status": "succeeded", "limit": 2}).json()["items"]
    assert len(done) == 2, "needs two finished runs from the tests above"
    page.goto(f"{live_service.url}/#/runs?status=succeeded&limit=25")
    for job in done:
        page.check(f"tr[data-job-id='{job['id']}'] input[type=checkbox]")
    page.click("button:has-text('Compare selected (2)')")
    page.wait_for_selector('[data-chart="compare-train/loss"][data-series="2"]')
    assert page.locator(".chart-grid figure").count() >= 3
    shoot(page, screenshots, "compare-desktop")
    record.check()


def test_cluster_page_shows_ray_resources(desktop: Any, live_service: Service, screenshots: Path) -> None:
    page, record = desktop
    page.click("nav >> text=Cluster")
    page.wait_for_selector("[data-resource=CPU]")
    assert page.inner_text("[data-stat=ray]").strip().endswith("ok")
    assert page.inner_text("[data-resource=CPU] td.num >> nth=0") == "4"
    shoot(page, screenshots, "cluster-desktop")
    record.check()


def test_pages_fit_a_phone(phone: Any, live_service: Service, screenshots: Path) -> None:
    page, record = phone
    with live_service.api() as client:
        run = client.get("/api/jobs", params={"status": "succeeded", "limit": 1}).json()["items"][0]
        sweep = client.get("/api/sweeps").json()["items"][-1]
    for name, route, ready in [
        ("runs", "/runs", ".runs-table"),
        ("run", f"/runs/{run['id']}", '[data-chart="loss"] canvas'),
        ("sweep", f"/sweeps/{sweep['id']}", ".cells-table"),
        ("submit", "/submit", "#submit-form"),
        ("cluster", "/cluster", "[data-resource=CPU]"),
    ]:
        page.goto(f"{live_service.url}/#{route}")
        page.wait_for_selector(ready)
        no_sideways_scroll(page)
        shoot(page, screenshots, f"{name}-phone")
    record.check()


def test_keyboard_only_login_and_navigation(browser: Any, live_service: Service) -> None:
    context, page, record = open_page(browser, live_service, PHONE)
    try:
        page.goto(f"{live_service.url}/#/cluster")
        page.wait_for_selector("#login-form")
        assert page.evaluate("() => document.activeElement.id") == "login-token"
        page.keyboard.type(live_service.token)
        page.keyboard.press("Enter")
        page.wait_for_selector("[data-resource=CPU]")
        assert page.evaluate("() => document.activeElement.tagName") == "H1"
        page.keyboard.press("Shift+Tab")
        for _ in range(12):
            if page.evaluate("() => document.activeElement.textContent") == "Runs":
                break
            page.keyboard.press("Shift+Tab")
        page.keyboard.press("Enter")
        page.wait_for_selector(".runs-table, .empty")
        assert page.get_attribute("a[data-nav=runs]", "aria-current") == "page"
        record.check()
    finally:
        context.close()


def test_login_page_on_a_phone(browser: Any, live_service: Service, screenshots: Path) -> None:
    context, page, record = open_page(browser, live_service, PHONE)
    try:
        page.goto(f"{live_service.url}/")
        page.wait_for_selector("#login-form")
        no_sideways_scroll(page)
        shoot(page, screenshots, "login-phone")
        login(page, live_service)
        record.check()
    finally:
        context.close()
