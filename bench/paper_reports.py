"""The four shipped paper sweeps through the embedded service, and their reproduction reports in Chromium.

Starts the service as ``make run`` would (``mmae serve`` on SQLite, MLflow in SQLite, a local Ray head
offering this machine's CPUs, a fresh data dir, default settings and resources), submits
``examples/paper/*.yaml`` unchanged (the body ``mmae sweep FILE`` sends: ``service.examples.sweep_body``),
prints progress until every cell has ended, then for each sweep:

- fetches its report (GET /api/sweeps/{id}/report) into ``test-output/reports/<sweep name>.html``;
- opens the report from the service in headless Chromium (Playwright, Debian's /usr/bin/chromium as
  ``tests/web`` uses) and saves a full-page screenshot to ``test-output/screenshots/report-<sweep name>.png``;
- checks that it rendered: one results row per swept value (seeds averaged), one cells row per cell, an
  effective-rank figure with a curve per cell and a curve in every figure, no script or CSP errors and
  nothing loaded from elsewhere;
- checks that the MLflow sync stored the same page as ``report.html`` on the sweep's parent run;
- prints what the report's results table shows (swept value -> linear top-1, kNN top-1, erank, MI).

Nothing is made up: every number comes from the runs. Exit status 1 when a cell failed or a check did not hold.

Run: ``python bench/paper_reports.py [--only table2_mu] [--keep]`` (22 cells of 200 steps: about 15-30
minutes on a busy 2-core machine). ``tests/web``'s session fixture empties test-output/screenshots/ when
it starts, so copy the screenshots elsewhere before running the browser tests if you want to keep them.
"""

from __future__ import annotations

import argparse
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from control_plane import api_process, wait_for
from overhead import SHIPPED_INTERVALS, TERMINAL

from service.auth import ADMIN_TOKEN_FILE
from service.cluster import ray_head
from service.examples import sweep_body
from service.tracking.report import LABELS, SEED
from service.tracking.sweep_report import REPORT_ARTIFACT

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "examples" / "paper"
# Submitted smallest first: the queue is FIFO, so a run cut short by --timeout still has whole sweeps
SWEEP_FILES = ("fig3_temperature", "fig1_siamese", "table2_mu", "fig4_methods")
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
PROGRESS_EVERY_S = 60.0  # a progress line at least this often, and whenever a cell ends
# The results-table columns the summary prints, by the report's own labels
SUMMARY = {
    "linear top-1": LABELS["eval/linear_top1"],
    "kNN top-1": LABELS["eval/knn_top1"],
    "erank": LABELS["info/erank"],
    "MI": LABELS["info/mi_corr_a1"],
}


@dataclass
class Submitted:
    stem: str  # the sweep file's name, e.g. table2_mu
    body: dict[str, Any]
    sweep: dict[str, Any]
    submitted_at: float
    ended_at: float | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.sweep["name"])

    @property
    def groups(self) -> int:
        """Rows of the report's results table: the grid's settings of every swept field but ``seed``."""
        return math.prod(len(spec["values"]) for name, spec in self.body["parameters"].items() if name != SEED)


def done_count(sweep: dict[str, Any]) -> int:
    return sum(sweep["counts"].get(status, 0) for status in TERMINAL)


def wait_all(client: httpx.Client, sweeps: list[Submitted], started: float, timeout_s: float) -> None:
    """Poll every sweep until each of its cells has ended (or ``timeout_s`` passed), printing cells done / total
    and elapsed time."""
    total = sum(item.sweep["total"] for item in sweeps)
    last_line, last_done = 0.0, -1
    deadline = time.monotonic() + timeout_s
    while True:
        counts: dict[str, int] = {}
        for item in sweeps:
            if item.ended_at is None:
                item.sweep = client.get(f"/api/sweeps/{item.sweep['id']}").raise_for_status().json()
                if done_count(item.sweep) == item.sweep["total"]:
                    item.ended_at = time.monotonic()
                    print(
                        f"  sweep {item.name} ended after {item.ended_at - started:.0f} s: {item.sweep['counts']}",
                        flush=True,
                    )
            for status, number in item.sweep["counts"].items():
                counts[status] = counts.get(status, 0) + number
        done = sum(counts.get(status, 0) for status in TERMINAL)
        now = time.monotonic()
        if done != last_done or now - last_line >= PROGRESS_EVERY_S:
            states = ", ".join(f"{number} {status}" for status, number in sorted(counts.items()))
            print(f"[{now - started:7.0f} s] cells done {done}/{total} ({states})", flush=True)
            last_line, last_done = now, done
        if done == total:
            return
        if now > deadline:
            print(
                f"--timeout: {total - done} of {total} cells not ended after {timeout_s:.0f} s; reporting as they "
                "stand",
                flush=True,
            )
            for item in sweeps:
                if item.ended_at is None:
                    item.problems.append(f"{item.sweep['total'] - done_count(item.sweep)} cells not ended")
            return
        time.sleep(5)


def stored_report(tracking_uri: str, client: httpx.Client, item: Submitted, timeout_s: float = 180) -> str | None:
    """The ``report.html`` the MLflow sync stored on the sweep's parent run once the run was closed, or None
    (with a problem recorded) when it did not appear within ``timeout_s``."""
    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri)
    found: dict[str, str] = {}

    def closed_with_report() -> bool:
        run_id = client.get(f"/api/sweeps/{item.sweep['id']}").json()["mlflow_parent_run_id"]
        if run_id is None or mlflow.get_run(run_id).info.status == "RUNNING":
            return False
        if REPORT_ARTIFACT not in {entry.path for entry in mlflow.list_artifacts(run_id)}:
            return False
        with tempfile.TemporaryDirectory() as folder:
            found[run_id] = Path(mlflow.download_artifacts(run_id, REPORT_ARTIFACT, folder)).read_text("utf-8")
        return True

    try:
        wait_for(closed_with_report, timeout_s, "no report", poll_s=2)
    except TimeoutError:
        item.problems.append(f"no {REPORT_ARTIFACT} on the MLflow parent run after {timeout_s:.0f} s")
        return None
    run_id, html = next(iter(found.items()))
    print(f"  MLflow parent run {run_id}: {REPORT_ARTIFACT} stored ({len(html):,} bytes)", flush=True)
    return html


def results_table(page: Any) -> tuple[list[str], list[list[str]]]:
    """The report's results table as text: its header and its rows."""
    header = [cell.strip() for cell in page.locator("table.results thead th").all_inner_texts()]
    rows = [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in page.locator("table.results tbody tr").all()
    ]
    return header, rows


def check_page(page: Any, item: Submitted, errors: list[str], foreign: list[str]) -> None:
    """Record in ``item.problems`` whatever the rendered report lacks."""

    def expect(condition: bool, problem: str) -> None:
        if not condition:
            item.problems.append(problem)

    results = page.locator("table.results tbody tr").count()
    expect(results == item.groups, f"results table has {results} rows, expected {item.groups}")
    cells = page.locator("table.cells tbody tr").count()
    expect(cells == item.sweep["total"], f"cells table has {cells} rows, expected {item.sweep['total']}")
    figures = page.locator("figure[data-metric]")
    expect(figures.count() > 0, "no figure")
    for index in range(figures.count()):
        figure = figures.nth(index)
        metric = figure.get_attribute("data-metric")
        lengths = figure.locator("polyline").evaluate_all(
            "(lines) => lines.map((line) => line.getAttribute('points').trim().split(/\\s+/).length)"
        )
        expect(bool(lengths) and min(lengths) >= 2, f"figure {metric}: curves with points {lengths}")
        if metric == "info/erank":
            expect(len(lengths) == item.sweep["total"], f"erank figure has {len(lengths)} curves")
    expect(page.locator('figure[data-metric="info/erank"]').count() == 1, "no effective-rank figure")
    expect(not errors, f"errors on the page: {errors}")
    expect(not foreign, f"the page loaded from elsewhere: {foreign}")


def _console(errors: list[str], message: Any) -> None:
    # as tests/web: Chromium logs each 4xx/5xx as "Failed to load resource"; the report loads nothing, so a
    # request that failed shows up as a foreign one or in the checks, and a CSP refusal is its own message
    if message.type == "error" and not message.text.startswith("Failed to load resource"):
        errors.append(f"console: {message.text}")


def render(browser: Any, base: str, token: str, item: Submitted, shots: Path) -> tuple[list[str], list[list[str]]]:
    """Open the report from the service (its CSP applies), check it, screenshot it; its results table."""
    context = browser.new_context(viewport=VIEWPORT, extra_http_headers={"Authorization": f"Bearer {token}"})
    page = context.new_page()
    errors: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.on("console", lambda message: _console(errors, message))
    page.on("request", lambda request: None if request.url.startswith((base, "data:")) else foreign.append(request.url))
    try:
        response = page.goto(f"{base}/api/sweeps/{item.sweep['id']}/report")
        if response is None or response.status != 200:
            item.problems.append(f"report answered {response and response.status}")
        page.wait_for_selector("table.results", timeout=20_000)
        page.screenshot(path=str(shots / f"report-{item.name}.png"), full_page=True)
        check_page(page, item, errors, foreign)
        return results_table(page)
    finally:
        context.close()


def cell_times(client: httpx.Client, item: Submitted) -> tuple[float, int]:
    """Seconds the sweep's cells ran (started -> finished, summed) and the retries they used."""
    jobs = client.get("/api/jobs", params={"sweep_id": item.sweep["id"], "limit": 500}).json()["items"]
    seconds = sum(
        (datetime.fromisoformat(job["finished_at"]) - datetime.fromisoformat(job["started_at"])).total_seconds()
        for job in jobs
        if job["started_at"] and job["finished_at"]
    )
    for job in jobs:
        if job["status"] != "succeeded":
            item.problems.append(f"cell #{job['id']} {job['name']} {job['status']}: {job.get('error')}")
    return seconds, sum(job["retries_used"] for job in jobs)


def print_summary(item: Submitted, header: list[str], rows: list[list[str]], ran_s: float, retries: int) -> None:
    keys = [name for name in item.body["parameters"] if name != SEED]
    wanted = {label: header.index(column) if column in header else None for label, column in SUMMARY.items()}
    paper = {column: index for index, column in enumerate(header) if column.startswith("paper")}
    seeds = len(item.body["parameters"].get(SEED, {}).get("values", [])) or 1
    wall = (item.ended_at or time.monotonic()) - item.submitted_at
    print(
        f"\n{item.name} ({item.stem}.yaml): {item.sweep['total']} cells, {seeds} seed(s) per row; "
        f"submit -> last cell ended {wall:.0f} s (queue shared with the other sweeps), cells ran {ran_s:.0f} s "
        f"in all, {retries} retries"
    )
    columns = [" / ".join(keys), "cells", *wanted, *paper]
    print("  " + " | ".join(columns))
    for row in rows:
        ours = ["—" if index is None else row[index] for index in wanted.values()]
        values = [*row[: len(keys)], row[header.index("cells")], *ours, *(row[index] for index in paper.values())]
        print("  " + " | ".join(values))


def report(
    client: httpx.Client, browser: Any, token: str, item: Submitted, data_dir: Path, reports: Path, shots: Path
) -> tuple[Submitted, list[str], list[list[str]], float, int]:
    """Save, check and photograph one sweep's report; what its summary needs."""
    # the MLflow sync stores the page once every cell has ended
    ended = item.ended_at is not None
    stored = stored_report(f"sqlite:///{data_dir / 'mlflow.db'}", client, item) if ended else None
    html = client.get(f"/api/sweeps/{item.sweep['id']}/report").raise_for_status().text
    (reports / f"{item.name}.html").write_text(html, encoding="utf-8")
    if stored is not None:
        same = "identical to" if stored == html else "differs from"
        print(f"  stored {REPORT_ARTIFACT} {same} GET /api/sweeps/{item.sweep['id']}/report", flush=True)
    header, rows = render(browser, str(client.base_url), token, item, shots)
    print(f"  {reports / f'{item.name}.html'}, {shots / f'report-{item.name}.png'}", flush=True)
    return (item, header, rows, *cell_times(client, item))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=[*SWEEP_FILES, *(f"paper-{stem.replace('_', '-')}" for stem in SWEEP_FILES)],
        help="run one sweep (file stem or sweep name)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir (SQLite, MLflow, runs, logs)")
    parser.add_argument("--output", type=Path, default=ROOT / "test-output")
    parser.add_argument(
        "--timeout",
        type=float,
        default=4 * 3600,
        help="seconds to wait for the cells; then the reports are taken as they stand",
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service and the Ray head on the way out
    stems = [stem for stem in SWEEP_FILES if args.only in (None, stem, f"paper-{stem.replace('_', '-')}")]
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium")
    reports, shots = args.output / "reports", args.output / "screenshots"
    reports.mkdir(parents=True, exist_ok=True)
    shots.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    scratch = Path(tempfile.mkdtemp(prefix="mmae-paper-"))
    data_dir = scratch / "data"
    database_url = f"sqlite:///{data_dir / 'mmae.db'}"
    cpus = ray_head.local_cpus()
    print(f"source {ROOT} (commit {commit.strip() or '?'}), data dir {data_dir}, {cpus} CPUs", flush=True)
    items: list[Submitted] = []
    began, finished = time.monotonic(), False
    try:
        with (
            ray_head.temporary_head(scratch / "ray_auth_token", num_cpus=cpus, num_gpus=0) as ray_address,
            api_process(database_url, ray_address, data_dir, SHIPPED_INTERVALS) as (client, _),
        ):
            token = (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
            print(f"service up after {time.monotonic() - began:.0f} s (Ray head {ray_address})", flush=True)
            started = time.monotonic()
            for stem in stems:
                body = sweep_body(PAPER / f"{stem}.yaml")
                sweep = client.post("/api/sweeps", json=body).raise_for_status().json()
                items.append(Submitted(stem, body, sweep, time.monotonic()))
                print(f"sweep {sweep['id']} ({sweep['name']}): {sweep['total']} cells", flush=True)
            wait_all(client, items, started, args.timeout)
            trained = time.monotonic() - started
            summaries = []
            from playwright.sync_api import sync_playwright

            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
                try:
                    for item in items:
                        print(f"report of {item.name}:", flush=True)
                        try:
                            summaries.append(report(client, browser, token, item, data_dir, reports, shots))
                        except Exception as error:  # one sweep's failure must not hide the others' reports
                            item.problems.append(f"report not checked: {error!r}")
                finally:
                    browser.close()
        finished = True
    finally:
        if args.keep or not finished:  # an interrupted run keeps its logs
            print(f"data dir kept: {data_dir} (API log {scratch / 'api.log'})", flush=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    print(
        f"\n=== {len(items)} sweeps, {sum(item.sweep['total'] for item in items)} cells: training "
        f"{trained:.0f} s, total wall {time.monotonic() - began:.0f} s (service start, reports and browser "
        "included) ==="
    )
    for item, header, rows, ran_s, retries in summaries:
        print_summary(item, header, rows, ran_s, retries)
    print(f"\nreports in {reports}, screenshots in {shots}")
    problems = [f"{item.name}: {problem}" for item in items for problem in item.problems]
    for problem in problems:
        print(f"PROBLEM {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
