"""Jobs store their configs whole, so a change of defaults never reinterprets an old run (issue 9)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mmae.config import TrainConfig, flatten_config
from service.scheduling.attempts import attempt_spec
from service.settings import Settings
from service.store.db import session_scope
from service.store.models import Job

# A umae job's config exactly as rows written before the paper-faithful defaults hold it.
STORED_BEFORE: dict[str, Any] = json.loads((Path(__file__).parents[1] / "stored_config_before_issue9.json").read_text())


def test_a_new_job_stores_every_field_with_its_default(client: TestClient) -> None:
    response = client.post("/api/jobs", json={"config": {"method": "mmae"}})
    assert response.status_code == 201, response.text
    stored = response.json()["config"]
    assert stored["loss"]["mu_convention"] == "official" and stored["loss"]["uniformity_lambda"] == 0.01
    assert flatten_config(TrainConfig.model_validate(stored)).keys() == flatten_config(TrainConfig()).keys()
    assert stored == TrainConfig(method="mmae").model_dump(mode="json")


def test_an_old_row_keeps_its_convention_and_weight_when_it_runs_again(client: TestClient, settings: Settings) -> None:
    with session_scope(client.app.state.session_factory) as session:
        job = Job(name="old-umae", method="umae", config=STORED_BEFORE, params={}, config_hash="fb2c183461cf8e83")
        session.add(job)
        session.flush()
        spec = attempt_spec(settings, job, SimpleNamespace(id=1))
        job_id = job.id
    assert spec.config.loss.mu_convention == "paper"
    assert spec.config.loss.uniformity_lambda / spec.config.data.batch_size**2 == pytest.approx(1.5e-5, rel=1e-12)
    assert client.get(f"/api/jobs/{job_id}").json()["config"] == STORED_BEFORE  # the row itself is untouched


def test_an_old_config_resubmitted_is_the_same_run(client: TestClient) -> None:
    response = client.post("/api/jobs", json={"config": STORED_BEFORE})
    assert response.status_code == 201, response.text
    loss = response.json()["config"]["loss"]
    assert loss["mu_convention"] == "paper" and "uniformity_gamma" not in loss
    assert loss["uniformity_lambda"] / 256**2 == pytest.approx(1.5e-5, rel=1e-12)
