"""The paper's experiments shipped as sweep files (examples/paper/): each parses, expands to the cells of its
table or figure with the settings its header states, is accepted by the API, and its report is matched to
the paper's experiment."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mmae import paper_numbers as paper
from service.examples import EXAMPLES_DIR, sweep_body
from service.scheduling.sweeps import Cell, expand
from service.schemas import SweepCreate
from service.settings import Settings
from service.tracking.report import ReportCell, SweepReport, paper_columns, paper_findings, render

PAPER_DIR = EXAMPLES_DIR / "paper"
EXPECTED = {
    "table2_mu": [{"loss.mu": mu} for mu in paper.TABLE2_MU_LINEAR_TOP1],
    "fig4_methods": [{"method": m, "seed": s} for m in ("mae", "umae", "mmae") for s in (0, 1, 2)],
    "fig3_temperature": [{"loss.temperature": t} for t in paper.FIGURE3_TEMPERATURES],
    "fig1_siamese": [{"method": m} for m in paper.FIGURE1_METHODS],
}


def cells_of(path: Path) -> list[Cell]:
    return expand(SweepCreate.model_validate(sweep_body(path)), Settings().max_sweep_cells)


def test_every_paper_sweep_file_is_known() -> None:
    assert sorted(path.stem for path in PAPER_DIR.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_paper_sweep_expands_to_its_cells_on_digits_in_seconds(name: str) -> None:
    cells = cells_of(PAPER_DIR / f"{name}.yaml")
    assert [cell.params for cell in cells] == EXPECTED[name]
    for cell in cells:
        config = cell.config
        assert (config.data.dataset, config.data.batch_size, config.steps) == ("digits", 128, 200)
        assert (config.model.size, config.model.depth, config.device) == ("tiny", 2, "auto")
        assert config.monitor.every == 10 and config.eval.enabled


def test_mae_family_cells_use_the_papers_official_convention_and_lambdas() -> None:
    for name in ("table2_mu", "fig4_methods"):
        for cell in cells_of(PAPER_DIR / f"{name}.yaml"):
            loss = cell.config.loss
            assert (loss.mu_convention, loss.tcr_lambda, loss.uniformity_lambda) == ("official", 0.01, 0.01)
            assert cell.config.model.mask_ratio == 0.75 and cell.config.optim.weight_decay == 0.05
    assert {cell.config.loss.mu for cell in cells_of(PAPER_DIR / "fig4_methods.yaml")} == {1.0}


@pytest.mark.parametrize(
    ("name", "tables", "figures"),
    [
        ("table2_mu", ["Table 2"], []),
        ("fig4_methods", ["Table 3", "Table 3"], ["Fig 4"]),
        ("fig3_temperature", [], ["Fig 3"]),
        ("fig1_siamese", [], ["Figs 1, 2, 5"] * 3),
    ],
)
def test_the_report_of_each_paper_sweep_quotes_its_experiment(name: str, tables: list[str], figures: list[str]) -> None:
    body = sweep_body(PAPER_DIR / f"{name}.yaml")
    cells = [
        ReportCell(i, f"cell-{i}", "queued", cell.params, cell.config.model_dump(mode="json"), {})
        for i, cell in enumerate(cells_of(PAPER_DIR / f"{name}.yaml"), start=1)
    ]
    report = SweepReport(1, body["name"], body["tags"], list(body["parameters"]), body["base_config"], cells)
    assert [column.label.split("(")[1].split(")")[0] for column in paper_columns(report)] == tables
    assert [setting.source for setting, _ in paper_findings(report)] == figures
    page = render(report)  # before any cell ran: every column, no figure, every cell queued
    assert page.count('class="status-queued">queued<') == len(cells) and "linear top-1 (%)" in page


def test_the_api_accepts_every_paper_sweep(client: TestClient) -> None:
    for name, expected in EXPECTED.items():
        response = client.post("/api/sweeps", json=sweep_body(PAPER_DIR / f"{name}.yaml"))
        assert response.status_code == 201, (name, response.text)
        assert response.json()["total"] == len(expected)
