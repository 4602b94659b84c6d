"""Passwords stay on the nodes (issue 10, finding 8): an attempt's spec, which Ray's Jobs API hands back to
anyone with the cluster token, names the database and MLflow without them; a worker takes them from its node."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import create_engine, text

from mmae.config import TrainConfig
from service.scheduling.attempts import attempt_spec
from service.settings import Settings
from service.store.models import Job
from workers.attempt import job_run
from workers.credentials import DATABASE_URL_ENV, MLFLOW_URI_ENV, with_node_password, without_password
from workers.reporter import connect

SECRET = "Zk3v9QmT1xWp8RbN4sLd"  # strong enough for the settings' placeholder check
DATABASE = f"postgresql+psycopg://mmae:{SECRET}@db.internal:5432/mmae"
MLFLOW = f"https://tracker:{SECRET}@mlflow.internal/"


@pytest.mark.parametrize(
    ("uri", "sent"),
    [
        (DATABASE, "postgresql+psycopg://mmae@db.internal:5432/mmae"),
        ("postgresql://mmae:s3cr%40t%3Ax@db/mmae?sslmode=require", "postgresql://mmae@db/mmae?sslmode=require"),
        ("postgresql://:only-a-password@db/mmae", "postgresql://db/mmae"),
        ("http://user:pw@[::1]:5000/", "http://user@[::1]:5000/"),
        ("sqlite:////var/lib/mmae/mmae.db", "sqlite:////var/lib/mmae/mmae.db"),
        ("http://mlflow:5000", "http://mlflow:5000"),
    ],
)
def test_the_password_is_removed_and_nothing_else(uri: str, sent: str) -> None:
    assert without_password(uri) == sent


def test_a_worker_takes_the_password_of_the_same_database_from_its_node(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = without_password(DATABASE)
    monkeypatch.setenv(DATABASE_URL_ENV, DATABASE)
    assert with_node_password(sent, DATABASE_URL_ENV) == DATABASE
    assert connect(sent).url.password == SECRET  # the worker's engine, built without connecting
    for other in (
        "postgresql+psycopg://mmae@db.other:5432/mmae",
        "postgresql+psycopg://admin@db.internal:5432/mmae",
        "postgresql+psycopg://mmae@db.internal:5432/other",
    ):
        assert with_node_password(other, DATABASE_URL_ENV) == other  # never another server's, user's or db's
    monkeypatch.delenv(DATABASE_URL_ENV)
    assert with_node_password(sent, DATABASE_URL_ENV) == sent  # then libpq's PGPASSWORD or ~/.pgpass apply


def test_the_spec_names_the_database_and_mlflow_without_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(data_dir=tmp_path, database_url=DATABASE, mlflow_tracking_uri=MLFLOW)
    job = Job(
        id=7,
        name="j",
        method="mmae",
        config=TrainConfig().model_dump(mode="json"),
        run_dir_name="job-7-abc",
        workers=1,
        num_cpus=1.0,
        num_gpus=0.0,
        placement="pack",
    )
    spec = attempt_spec(settings, job, SimpleNamespace(id=3))
    assert SECRET not in spec.model_dump_json()
    assert spec.database_url == "postgresql+psycopg://mmae@db.internal:5432/mmae"
    assert spec.mlflow_tracking_uri == "https://tracker@mlflow.internal/"
    monkeypatch.setenv(MLFLOW_URI_ENV, MLFLOW)
    monkeypatch.setattr("workers.attempt.RunTracker", lambda uri, run_id: (uri, run_id))
    engine = create_engine("sqlite://")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE jobs (id INTEGER PRIMARY KEY, mlflow_run_id TEXT)"))
        connection.execute(text("INSERT INTO jobs VALUES (7, 'run-1')"))
    assert job_run(engine, spec) == (MLFLOW, "run-1")  # the worker's MLflow client gets the node's password
