"""The worker entrypoint gives MLflow's client short timeouts (a hanging tracking server must cost the
reporter seconds, not minutes), unless the operator set their own."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from workers.run import MLFLOW_CLIENT_ENV, main
from workers.spec import EXIT_PERMANENT


def test_the_entrypoint_shortens_mlflow_timeouts_but_keeps_an_operator_s(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "")  # restored (unset or not) after the test
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_TIMEOUT")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "5")
    assert main(["--spec", str(tmp_path / "missing.json")]) == EXIT_PERMANENT
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == MLFLOW_CLIENT_ENV["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "5"
