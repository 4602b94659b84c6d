"""Every number in a job or sweep request has a finite bound: a value past it is a 422 naming the field,
never a 500 or a job that can only fail on a worker (issue 10, finding 5)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.settings import DEFAULT_MAX_SWEEP_CELLS, Settings
from tests.tiny_config import TINY

JSON = {"content-type": "application/json"}


def post_raw(client: TestClient, path: str, raw: str) -> list[dict[str, Any]]:
    """POST ``raw`` JSON text (so ``1e999`` reaches the server as written) and return the 422's errors."""
    response = client.post(path, content=raw, headers=JSON)
    assert response.status_code == 422, response.text
    assert client.get("/api/jobs").json()["total"] == 0, "nothing is created"
    return response.json()["detail"]


def sweep_body(parameters: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "bounds", "base_config": TINY, "parameters": parameters} | extra


SIZE_FIELDS = [
    ("data", "batch_size", 10**9),
    ("data", "image_size", 10**6),
    ("data", "num_workers", 10**4),
    ("data", "synthetic_samples", 10**12),
    ("data", "synthetic_classes", 10**6),
    ("model", "depth", 10**9),
    ("model", "patch_size", 10**5),
    ("model", "decoder_dim", 10**9),
    ("model", "decoder_depth", 10**9),
    ("model", "decoder_heads", 10**9),
    ("model", "projector_hidden_dim", 10**9),
    ("model", "projector_dim", 10**9),
    ("model", "predictor_hidden_dim", 10**9),
    ("optim", "warmup_steps", 10**12),
    ("monitor", "every", 10**12),
    ("eval", "linear_epochs", 10**9),
    ("eval", "knn_k", 10**9),
    ("eval", "finetune_epochs", 10**9),
    (None, "checkpoint_keep", 10**9),
    (None, "checkpoint_every", 10**12),
    (None, "log_every", 10**12),
]


@pytest.mark.parametrize(("section", "field", "value"), SIZE_FIELDS, ids=[case[1] for case in SIZE_FIELDS])
def test_absurd_sizes_are_refused_at_their_field(
    client: TestClient, section: str | None, field: str, value: int
) -> None:
    config = {section: {field: value}} if section else {field: value}
    [error] = post_raw(client, "/api/jobs", json.dumps({"config": config}))
    assert error["loc"] == ["body", "config", *filter(None, [section]), field]
    assert error["msg"].startswith("Input should be less than or equal to")


@pytest.mark.parametrize(
    ("raw_config", "loc"),
    [
        ('{"optim": {"lr": 1e999}}', ["body", "config", "optim", "lr"]),
        ('{"loss": {"mu": 1e999}}', ["body", "config", "loss", "mu"]),
        ('{"optim": {"grad_clip": -1e999}}', ["body", "config", "optim", "grad_clip"]),
    ],
)
def test_a_number_that_overflows_to_infinity_is_refused(client: TestClient, raw_config: str, loc: list[str]) -> None:
    [error] = post_raw(client, "/api/jobs", f'{{"config": {raw_config}}}')
    assert error["loc"] == loc and error["msg"] == "Input should be a finite number"


@pytest.mark.parametrize(
    ("parameter", "loc", "reason"),
    [
        ('{"distribution": "int_uniform", "low": -1e999, "high": 3}', ["low"], "finite number"),
        ('{"distribution": "uniform", "low": 0, "high": 1e999}', ["high"], "finite number"),
        ('{"distribution": "log_uniform", "low": 1e-3, "high": 1e300}', ["high"], f"less than or equal to {10**15}"),
        ('{"distribution": "int_uniform", "low": -1e300, "high": 0}', ["low"], f"greater than or equal to {-(10**15)}"),
    ],
)
def test_distribution_bounds_are_finite(client: TestClient, parameter: str, loc: list[str], reason: str) -> None:
    body = json.dumps(sweep_body({}, strategy="random", num_samples=2))
    raw = body.replace('"parameters": {}', f'"parameters": {{"seed": {parameter}}}')
    errors = post_raw(client, "/api/sweeps", raw)
    assert errors[0]["loc"] == ["body", "parameters", "seed", "distribution", *loc], errors
    assert reason in errors[0]["msg"]


def test_a_swept_value_that_overflows_is_refused(client: TestClient) -> None:
    raw = json.dumps(sweep_body({"loss.mu": {"values": [1.0, "PLACEHOLDER"]}})).replace('"PLACEHOLDER"', "1e999")
    [error] = post_raw(client, "/api/sweeps", raw)
    assert error["loc"] == ["body", "parameters", "loss.mu"] and "finite number" in error["msg"]


@pytest.mark.parametrize(
    ("extra", "loc"),
    [
        ({"max_concurrency": 10**30}, ["body", "max_concurrency"]),
        ({"max_concurrency": 10_001}, ["body", "max_concurrency"]),
        ({"seed": 2**64, "strategy": "random", "num_samples": 2}, ["body", "seed"]),
    ],
)
def test_sweep_counters_are_bounded(client: TestClient, extra: dict[str, Any], loc: list[str]) -> None:
    [error] = post_raw(client, "/api/sweeps", json.dumps(sweep_body({"loss.mu": {"values": [1.0]}}, **extra)))
    assert error["loc"] == loc and "less than or equal to" in error["msg"]


def test_a_grid_past_the_default_cell_limit_is_refused(client: TestClient) -> None:
    seeds, mus = list(range(DEFAULT_MAX_SWEEP_CELLS // 2 + 1)), [1.0, 2.0]  # two cells more than allowed
    parameters = {"seed": {"values": seeds}, "loss.mu": {"values": mus}}
    [error] = post_raw(client, "/api/sweeps", json.dumps(sweep_body(parameters)))
    assert error["loc"] == ["body", "parameters"]
    assert error["msg"] == (
        f"the grid has {2 * len(seeds)} cells; a sweep may have at most {DEFAULT_MAX_SWEEP_CELLS} cells "
        "(MMAE_MAX_SWEEP_CELLS)"
    )


class TestCellLimitSetting:
    @pytest.fixture
    def settings(self, tmp_path: Path, database_url: str) -> Settings:
        return Settings(data_dir=tmp_path / "data", database_url=database_url, run_scheduler=False, max_sweep_cells=4)

    def test_the_setting_caps_grid_and_random_sweeps(self, client: TestClient) -> None:
        grid = sweep_body({"seed": {"values": [1, 2, 3, 4, 5]}})
        assert post_raw(client, "/api/sweeps", json.dumps(grid))[0]["loc"] == ["body", "parameters"]
        random = sweep_body({"seed": {"values": [1, 2]}}, strategy="random", num_samples=5)
        [error] = post_raw(client, "/api/sweeps", json.dumps(random))
        assert error["loc"] == ["body", "num_samples"] and "at most 4 cells" in error["msg"]
        fits = client.post("/api/sweeps", json=sweep_body({"seed": {"values": [1, 2, 3, 4]}}))
        assert fits.status_code == 201 and fits.json()["total"] == 4
