"""Fixtures for the worker tests: one authenticating S3 emulator per session, and an environment that
points AWS clients at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3_server import S3Emulator, s3_emulator

# Variables that would point an AWS client somewhere other than the emulator if the machine has them.
FOREIGN_AWS_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE")


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Emulator]:
    """A local S3 emulator (moto server on 127.0.0.1) with one bucket, for the whole session."""
    with s3_emulator() as emulator:
        yield emulator


@pytest.fixture
def s3_env(s3: S3Emulator, monkeypatch: pytest.MonkeyPatch) -> S3Emulator:
    """The emulator, with this test's AWS_* environment pointing at it with valid credentials."""
    for name in FOREIGN_AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    return s3
