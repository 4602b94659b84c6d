"""A sweep's reproduction report: the page from hand-built cells (mean ± std over seeds, escaping, the paper's
numbers only where the sweep is one of its experiments, failed cells shown), the route (auth, 404), the
artifact stored when a sweep ends (MLflow failures only logged), and ``mmae report``."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from mmae.config import TrainConfig
from service.scheduling.attempts import finish
from service.settings import Settings
from service.store.db import session_scope
from service.store.models import Job, MetricPoint, Sweep
from service.store.series import SeriesData
from service.store.states import JobStatus
from service.tracking.mlflow_sync import sync_pass
from service.tracking.report import ReportCell, SweepReport, line_chart, render
from service.tracking.sweep_report import store_report
from service.tracking.tracker import Tracker
from tests.service.conftest import Cli

# A live API for the CLI, on SQLite (the report reuses queries tested on both backends).
from tests.service.test_cli import api, database_url  # noqa: F401
from tests.tiny_config import TINY

HOSTILE = '<script>alert("x")</script>'
MMAE = TrainConfig.model_validate({"method": "mmae", "steps": 300, "data": {"batch_size": 128}}).model_dump(mode="json")


def cell(
    job_id: int, params: dict[str, Any], status: str = "succeeded", config: dict[str, Any] = MMAE, **finals: float
) -> ReportCell:
    values = {name.replace("__", "/"): value for name, value in finals.items()}
    series = {"info/erank": SeriesData([0, 10, 20], [3.0, 4.0 + job_id, float("nan")])}
    return ReportCell(job_id, f"cell-{job_id}", status, params, config, values, series)


def mu_report(cells: list[ReportCell], name: str = "mu") -> SweepReport:
    return SweepReport(1, name, ["digits"], ["loss.mu", "seed"], MMAE, cells)


def seeded_mu_cells() -> list[ReportCell]:
    return [
        cell(1, {"loss.mu": 1.0, "seed": 0}, eval__linear_top1=0.80, info__erank=10.0),
        cell(2, {"loss.mu": 1.0, "seed": 1}, eval__linear_top1=0.82, info__erank=12.0),
        cell(3, {"loss.mu": 1.0, "seed": 2}, eval__linear_top1=0.84, info__erank=14.0),
        cell(4, {"loss.mu": 3.0, "seed": 0}, eval__linear_top1=0.70),
        cell(5, {"loss.mu": 3.0, "seed": 1}, status="failed"),
        cell(6, {"loss.mu": 3.0, "seed": 2}, status="running"),
    ]


def results_row(html: str, first: str) -> str:
    rows = re.findall(r"<tr>(.*?)</tr>", html.split('class="results"')[1].split("</table>")[0])
    return next(row for row in rows if row.startswith(f"<td>{first}</td>"))


def test_seeds_are_averaged_with_the_sample_std_and_the_paper_table2_sits_beside_ours() -> None:
    html = render(mu_report(seeded_mu_cells()))
    mu1 = results_row(html, "1")
    assert "3/3 succeeded" in mu1
    assert "82.0 ± 2.0" in mu1, "linear top-1 of 0.80, 0.82, 0.84 in %: mean 82, sample std 2"
    assert "12.000 ± 2.000" in mu1, "final erank 10, 12, 14"
    assert ">62.40<" in mu1, "Table 2's ViT-B number for mu = 1"
    mu3 = results_row(html, "3")
    assert "1/3 succeeded" in mu3 and ">70.0 (n=1)<" in mu3 and ">50.46<" in mu3, "one of three: no ±, its count"
    assert "paper (Table 2): ViT-B, ImageNet-1K, 200 ep, batch 1024" in html
    assert "ours: digits 8x8, ViT-tiny, 300 steps, batch 128" in html
    assert '<td class="status-failed">failed</td>' in html and '<td class="status-running">running</td>' in html
    assert "final erank" in html and "final MI" not in html, "only the metrics some cell recorded"


def test_figures_are_inline_svg_without_scripts_or_network() -> None:
    html = render(mu_report(seeded_mu_cells()))
    figure = html.split('<figure data-metric="info/erank">')[1].split("</figure>")[0]
    assert figure.count("<polyline") == 6, "one curve per cell"
    assert "NaN" not in figure and "nan" not in figure, "a non-finite point is left out"
    assert "<script" not in html and "http://" not in html.replace("http://www.w3.org/2000/svg", "")
    assert 'data-metric="info/mi_corr_a1"' not in html, "no figure for a metric no cell recorded"


def test_the_seeds_of_one_swept_value_share_a_colour_and_differ_in_dash() -> None:
    figure = line_chart("info/erank", seeded_mu_cells())
    strokes = re.findall(
        r'<polyline fill="none" stroke="(#\w+)" stroke-width="1.5" stroke-dasharray="([\d ]*)"', figure
    )
    assert len(strokes) == 6
    assert len({colour for colour, _ in strokes[:3]}) == 1 and len({dash for _, dash in strokes[:3]}) == 3  # mu = 1
    assert strokes[3][0] != strokes[0][0] and [dash for _, dash in strokes[3:]] == [dash for _, dash in strokes[:3]]


def test_every_user_string_is_escaped() -> None:
    hostile = cell(1, {"loss.mu": HOSTILE, "seed": 0}, eval__linear_top1=0.5)
    hostile = ReportCell(
        hostile.job_id, HOSTILE, hostile.status, hostile.params, hostile.config, hostile.finals, hostile.series
    )
    report = SweepReport(1, HOSTILE, [HOSTILE], ["loss.mu", "seed"], MMAE, [hostile])
    html = render(report)
    assert "<script" not in html
    assert html.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 5, "name, tag, param, cell, legend"


@pytest.mark.parametrize(
    ("change", "expected", "absent"),
    [
        ({"mu_convention": "paper"}, [], ["paper ("]),  # Def. 4.8's mu is another quantity
        ({}, ["paper (Table 2)"], ["paper (Table 3)", "paper (Fig"]),
    ],
)
def test_table2_only_for_an_official_convention_mmae_mu_sweep(
    change: dict[str, Any], expected: list[str], absent: list[str]
) -> None:
    config = MMAE | {"loss": MMAE["loss"] | change}
    cells = [cell(1, {"loss.mu": 1.0, "seed": 0}, config=config, eval__linear_top1=0.8)]
    html = render(SweepReport(1, "mu", [], ["loss.mu", "seed"], config, cells))
    assert all(text in html for text in expected) and not any(text in html for text in absent)


def test_method_sweep_gets_table3_and_fig4_and_a_temperature_sweep_fig3_without_numbers() -> None:
    methods = [
        cell(i, {"method": method, "seed": 0}, config=MMAE | {"method": method}, eval__linear_top1=0.5)
        for i, method in enumerate(("mae", "umae", "mmae"), start=1)
    ]
    html = render(SweepReport(1, "methods", [], ["method", "seed"], MMAE, methods))
    assert ">59.2<" in results_row(html, "mae") and ">86.8<" in results_row(html, "umae")
    assert ">60.9<" in results_row(html, "mmae") and ">88.1<" in results_row(html, "mmae")
    assert html.count("paper (Table 3): ViT-B, CIFAR-100, 1000 ep, mu = 1") == 1 and "paper (Fig 4)" in html
    assert "paper linear top-1 (%)" in html and "paper linear top-5 (%)" in html  # spelt as our columns are

    simclr = TrainConfig.model_validate({"method": "simclr"}).model_dump(mode="json")
    temps = [cell(i, {"loss.temperature": t}, config=simclr) for i, t in enumerate((0.3, 0.5, 0.7), start=1)]
    html = render(SweepReport(2, "t", [], ["loss.temperature"], simclr, temps))
    assert "paper (Fig 3): SimCLR, CIFAR-10" in html and "figure only, no numbers printed" in html
    assert "paper linear" not in html and "paper (Table" not in html
    other = [cell(1, {"loss.temperature": 0.1}, config=simclr)]
    assert "paper (Fig 3)" not in render(SweepReport(3, "t", [], ["loss.temperature"], simclr, other))


SWEEP = {
    "name": "mu-seeds",
    "base_config": TINY,
    "parameters": {"loss.mu": {"values": [1, 3]}, "seed": {"values": [0, 1]}},
    "tags": ["digits"],
}


def finished_sweep(client: TestClient) -> dict[str, Any]:
    """A sweep of four cells: mu = 1 succeeded twice (top-1 0.6 and 0.8, erank curves), mu = 3 failed and
    queued."""
    sweep = client.post("/api/sweeps", json=SWEEP).json()
    jobs = client.get("/api/jobs", params={"sweep_id": sweep["id"], "sort": "created_at"}).json()["items"]
    now = datetime.now(UTC)
    with session_scope(client.app.state.session_factory) as session:
        for job, status, top1 in zip(
            jobs, ("succeeded", "succeeded", "failed", "queued"), (0.6, 0.8, None, None), strict=True
        ):
            summary = {"eval/linear_top1": top1} if top1 else None
            session.execute(update(Job).where(Job.id == job["id"]).values(status=status, summary=summary))
        for job in jobs[:2]:
            session.add_all(
                MetricPoint(
                    job_id=job["id"], name="info/erank", step=step, value=2.0 + step, attempt_id=1, logged_at=now
                )
                for step in (0, 10, 20)
            )
    return sweep


def test_report_route_renders_the_sweep_and_needs_a_token(client: TestClient, anonymous_client: TestClient) -> None:
    sweep = finished_sweep(client)
    response = client.get(f"/api/sweeps/{sweep['id']}/report")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]
    html = response.text
    assert "70.0 ± 14.1" in results_row(html, "1"), "mean of 60 and 80 %, sample std 14.1"
    assert (
        "0/2 succeeded" in results_row(html, "3")
        and "(n=" not in results_row(html, "1")
        and "status-failed" in html
        and "status-queued" in html
    )
    assert "final erank" in html and html.count("<polyline") == 2
    assert client.get("/api/sweeps/999/report").json() == {"detail": "sweep 999 not found"}
    assert anonymous_client.get(f"/api/sweeps/{sweep['id']}/report").status_code == 401


@pytest.fixture
def anonymous_client(client: TestClient) -> TestClient:
    """A second client of the same app, without credentials."""
    return TestClient(client.app)


@pytest.fixture
def mlflow_settings(settings: Settings, mlflow_store: str, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"mlflow_tracking_uri": mlflow_store, "mlflow_experiment": tmp_path.name})


@pytest.mark.slow
def test_report_is_stored_on_the_parent_run_and_mlflow_failures_are_only_logged(
    client: TestClient, mlflow_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    sweep = finished_sweep(client)
    tracker = client.app.state.tracker = Tracker(mlflow_settings)
    factory = client.app.state.session_factory
    store_report(tracker, "no-such-run", "<html></html>")
    assert "report of MLflow run no-such-run not stored" in caplog.text

    with session_scope(factory) as session:
        row = session.get(Sweep, sweep["id"])
        row.mlflow_parent_run_id = run_id = tracker.create_sweep_run(row)
        session.execute(update(Job).where(Job.sweep_id == row.id, Job.status == "queued").values(status="running"))
    with session_scope(factory) as session:
        last = session.query(Job).filter_by(sweep_id=sweep["id"], status="running").one()
        finish(last, JobStatus.FAILED)
    sync_pass(factory, tracker)  # the scheduler's MLflow thread closes the ended sweep's run
    stored = Path(tracker.client.download_artifacts(run_id, "report.html", str(mlflow_settings.data_dir)))
    page = stored.read_text(encoding="utf-8")
    assert page.count('class="status-failed">failed<') == 2, "the report of the ended sweep, with its last cell"


def test_cli_report_writes_the_page_and_prints_its_path(api: str, cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    headers = {"Authorization": f"Bearer {os.environ['MMAE_TOKEN']}"}
    sweep = httpx.post(f"{api}/api/sweeps", json=SWEEP, headers=headers).json()
    output = tmp_path / "report.html"
    assert cli("report", str(sweep["id"]), "--output", str(output)) == (0, f"{output}\n", "")
    assert "Reproduction report · sweep #1 mu-seeds" in output.read_text(encoding="utf-8")
    assert cli("report", "999") == (2, "", "mmae: error: sweep 999 not found\n")
