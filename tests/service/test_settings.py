"""Settings refuse what would make a deployment unsafe or unworkable, each with one line naming the variable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

STRONG_PASSWORD = "0f3c9a1e5b7d2c4a8e6f"


@pytest.mark.parametrize("password", ["short", "change-me-please-now-1234", "CHANGEME0123456789abcdef"])
def test_a_guessable_database_password_is_refused(password: str) -> None:
    with pytest.raises(ValidationError, match="MMAE_DATABASE_URL: the database password") as raised:
        Settings(database_url=f"postgresql+psycopg://mmae:{password}@db:5432/mmae")
    assert password not in str(raised.value).split("input_value")[0]  # the message never repeats the secret


def test_urls_without_a_password_or_with_a_strong_one_are_accepted() -> None:
    Settings(database_url="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    Settings(database_url=f"postgresql+psycopg://mmae:{STRONG_PASSWORD}@db:5432/mmae")
    Settings(database_url="sqlite:///tmp/mmae.db")


@pytest.mark.parametrize("token", ["change-me-to-a-long-random-token", "tooshort"])
def test_a_placeholder_ray_token_is_refused_for_a_remote_cluster(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_AUTH_TOKEN", token)
    with pytest.raises(ValidationError, match="RAY_AUTH_TOKEN: must be at least 32 random characters"):
        Settings(ray_address="http://ray-head:8265")
    monkeypatch.setenv("RAY_AUTH_TOKEN", os.urandom(32).hex())
    Settings(ray_address="http://ray-head:8265")


@pytest.mark.parametrize("uri", ["ftp://host/x", "relative/path", "s3://", "s3://UPPER/x"])
def test_a_storage_uri_of_an_unknown_shape_is_refused(uri: str) -> None:
    with pytest.raises(ValidationError, match="MMAE_STORAGE_URI"):
        Settings(storage_uri=uri)


def test_the_default_storage_is_the_runs_dir_and_s3_is_kept_as_given(tmp_path: Path) -> None:
    assert Settings(data_dir=tmp_path).resolved_storage_uri == str((tmp_path / "runs").resolve())
    assert Settings(storage_uri="s3://bucket/prefix").resolved_storage_uri == "s3://bucket/prefix"


def test_a_heartbeat_timeout_shorter_than_three_beats_is_refused() -> None:
    with pytest.raises(ValidationError, match="MMAE_HEARTBEAT_TIMEOUT_S"):
        Settings(heartbeat_interval_s=10, heartbeat_timeout_s=20)


@pytest.mark.slow
def test_mmae_serve_says_what_is_wrong_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "MMAE_DATA_DIR": str(tmp_path), "MMAE_STORAGE_URI": "ftp://host/runs"}
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "mmae: error: invalid configuration: MMAE_STORAGE_URI: scheme 'ftp' is not supported; use an absolute "
        "path, file:///path or s3://bucket/prefix"
    ]
