"""Examples, the config schema and UI settings: what clients build their requests from."""

from __future__ import annotations

from fastapi.testclient import TestClient

from mmae.config import TrainConfig


def test_every_example_file_is_a_request_the_api_accepts(client: TestClient) -> None:
    examples = client.get("/api/examples").json()
    names = {example["name"]: example["kind"] for example in examples}
    assert names["mu_sweep"] == "sweep" and names["temperature_sweep"] == "sweep"
    for example in examples:
        path = "/api/sweeps" if example["kind"] == "sweep" else "/api/jobs"
        response = client.post(path, json=example["body"])
        assert response.status_code == 201, (example["name"], response.text)
    mu = next(example["body"] for example in examples if example["name"] == "mu_sweep")
    assert mu["parameters"] == {"loss.mu": {"values": [0.5, 1.0, 3.0]}}
    assert mu["base_config"]["data"]["dataset"] == "digits"


def test_config_schema_and_ui_settings(client: TestClient) -> None:
    assert client.get("/api/config/schema").json() == TrainConfig.model_json_schema()
    assert client.get("/api/settings/ui").json() == {
        "collapse_fraction": 0.04,
        "mlflow_ui_url": "http://mlflow.example:5000",
    }
