"""A job reads data only inside the operator's dataset roots (MMAE_DATA_ROOTS), judged from the path's text
alone, so the answer says nothing about the workers' files (issue 10, finding 1)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.data_roots import is_inside, parse_data_roots
from service.settings import Settings
from tests.tiny_config import TINY

ROOTS = (PurePosixPath("/data/sets"), PurePosixPath("/mnt/cifar"))


@pytest.mark.parametrize(
    ("root", "inside"),
    [
        ("/data/sets", True),
        ("/data/sets/cifar-10-batches-py", True),
        ("/data/sets/./a/../cifar", True),
        ("/mnt/cifar/", True),
        ("/data/sets/../../etc", False),
        ("/data/sets/..", False),
        ("/data/setsmore/cifar", False),
        ("//data/sets/cifar", False),
        ("data/sets/cifar", False),
        ("../data/sets", False),
        ("~/data/sets", False),
        ("", False),
    ],
)
def test_inside_is_decided_lexically(root: str, inside: bool) -> None:
    assert is_inside(root, ROOTS) is inside


def test_roots_come_from_colon_separated_absolute_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_data_roots("/data/sets/:/mnt/x/../cifar") == ROOTS
    assert parse_data_roots("") == ()
    monkeypatch.setenv("MMAE_DATA_ROOTS", "/data/sets:/mnt/cifar")
    assert Settings().data_roots == ROOTS
    monkeypatch.setenv("MMAE_DATA_ROOTS", "/data/sets:datasets")
    with pytest.raises(ValidationError, match="MMAE_DATA_ROOTS: 'datasets' is not an absolute path"):
        Settings()


def cifar_job(root: str) -> dict[str, Any]:
    return {"config": TINY | {"data": {"dataset": "cifar10", "root": root, "batch_size": 64}}}


def test_without_roots_only_the_bundled_datasets_are_served(client: TestClient) -> None:
    response = client.post("/api/jobs", json=cifar_job("/data/sets/cifar"))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "config", "data", "root"]
    assert error["msg"].startswith("config.data.root cannot be used: this service has no dataset roots")
    assert client.post("/api/jobs", json={"config": TINY}).status_code == 201


class TestWithRoots:
    @pytest.fixture
    def settings(self, tmp_path: Path, database_url: str) -> Settings:
        return Settings(
            data_dir=tmp_path / "data",
            database_url=database_url,
            run_scheduler=False,
            data_roots=f"{tmp_path / 'sets'}:/mnt/cifar",
        )

    def test_a_root_inside_is_accepted(self, client: TestClient, settings: Settings) -> None:
        response = client.post("/api/jobs", json=cifar_job(f"{settings.data_roots[0]}/cifar"))
        assert response.status_code == 201, response.text

    def test_a_root_outside_is_refused_the_same_whether_it_exists_or_not(
        self, client: TestClient, tmp_path: Path
    ) -> None:
        (tmp_path / "secret").mkdir()
        answers = []
        for root in (tmp_path / "secret", tmp_path / "missing", f"{tmp_path}/sets/../secret", "relative/sets"):
            response = client.post("/api/jobs", json=cifar_job(str(root)))
            assert response.status_code == 422, response.text
            answers.append(response.json())
        [error] = answers[0]["detail"]
        assert error["loc"] == ["body", "config", "data", "root"]
        assert error["msg"] == (
            f"config.data.root must be an absolute path inside one of the dataset roots: {tmp_path}/sets, /mnt/cifar"
        )
        assert all(answer == answers[0] for answer in answers), "no answer depends on what exists"
        assert client.get("/api/jobs").json()["total"] == 0

    @pytest.mark.parametrize(
        ("base_root", "swept_roots", "loc"),
        [
            ("/mnt/cifar", ["/mnt/cifar/a", "/etc"], ["body", "parameters", "data.root"]),
            ("/etc", None, ["body", "base_config", "data", "root"]),
        ],
    )
    def test_every_sweep_cell_is_checked(
        self, client: TestClient, base_root: str, swept_roots: list[str] | None, loc: list[str]
    ) -> None:
        parameters = {"data.root": {"values": swept_roots}} if swept_roots else {"loss.mu": {"values": [1.0, 3.0]}}
        body = {"name": "roots", "base_config": cifar_job(base_root)["config"], "parameters": parameters}
        response = client.post("/api/sweeps", json=body)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == loc and "inside one of the dataset roots" in error["msg"]
        assert client.get("/api/sweeps").json()["total"] == 0
