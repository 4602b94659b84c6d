"""The Alembic migrations build exactly the ORM's schema on SQLite and PostgreSQL, and run both ways."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from service.store.db import make_engine
from service.store.migrations import alembic_config, upgrade_to_head
from service.store.models import Base
from tests.conftest import postgres_database


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    with postgres_database() as url:
        yield url


def schema_diff(url: str) -> list:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_builds_exactly_the_orm_schema(empty_database: str) -> None:
    engine = make_engine(empty_database)
    try:
        upgrade_to_head(engine)
        upgrade_to_head(engine)  # idempotent: a restart finds the schema at head
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert set(Base.metadata.tables) <= tables and "alembic_version" in tables
    assert schema_diff(empty_database) == []


def test_downgrade_to_base_and_back(empty_database: str) -> None:
    engine = make_engine(empty_database)
    config = alembic_config()
    try:
        upgrade_to_head(engine)
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "base")
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade_to_head(engine)
    finally:
        engine.dispose()
    assert schema_diff(empty_database) == []


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1


def test_jobs_from_before_0002_keep_their_run_dir_and_get_headline_and_params(empty_database: str) -> None:
    engine = make_engine(empty_database)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                text(
                    "INSERT INTO jobs (id, name, status, method, config, config_hash, priority, max_retries,"
                    " retries_used, num_cpus, num_gpus, tags, summary, created_at, queued_at) VALUES (41, 'old',"
                    " 'succeeded', 'mmae', :config, 'h', 0, 2, 0, 1, 0, '[]', :summary, :now, :now)"
                ),
                {
                    "now": datetime.now(UTC),
                    "config": '{"loss": {"mu": 3.0}, "steps": 30}',
                    "summary": '{"eval/linear_top1": 0.75}',
                },
            )
        upgrade_to_head(engine)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT run_dir_name, linear_top1, params FROM jobs WHERE id = 41")).one()
        assert (row.run_dir_name, row.linear_top1) == ("job-41", 0.75)
        params = row.params if isinstance(row.params, dict) else json.loads(row.params)  # SQLite: text
        assert params["loss.mu"] == 3.0 and params["steps"] == 30 and params["data.dataset"] is None
    finally:
        engine.dispose()


def test_jobs_from_before_0003_read_as_one_packed_worker(empty_database: str) -> None:
    engine = make_engine(empty_database)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0002")
            connection.execute(
                text(
                    "INSERT INTO jobs (id, name, status, method, config, config_hash, priority, max_retries,"
                    " retries_used, num_cpus, num_gpus, tags, created_at, queued_at) VALUES (7, 'old', 'queued',"
                    " 'mmae', '{}', 'h', 0, 2, 0, 2, 0.5, '[]', :now, :now)"
                ),
                {"now": datetime.now(UTC)},
            )
        upgrade_to_head(engine)
        with engine.connect() as connection:
            row = connection.execute(text("SELECT workers, num_cpus, num_gpus, placement FROM jobs WHERE id = 7")).one()
        assert tuple(row) == (1, 2.0, 0.5, "pack"), "per-worker resources of the one worker it always had"
    finally:
        engine.dispose()


def test_tokens_from_before_0004_become_admins_and_old_keys_replay_nothing(empty_database: str) -> None:
    engine = make_engine(empty_database)
    config = alembic_config()
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0003")
            now = datetime.now(UTC)
            connection.execute(
                text(
                    "INSERT INTO api_tokens (id, name, token_hash, created_at, revoked) VALUES (3, 'ci', 'h', :now,"
                    " false)"
                ),
                {"now": now},
            )
            for job_id in (8, 9):
                connection.execute(
                    text(
                        "INSERT INTO jobs (id, name, status, method, config, config_hash, priority, max_retries,"
                        " retries_used, num_cpus, num_gpus, tags, created_at, queued_at, idempotency_key) VALUES"
                        " (:id, 'old', 'queued', 'mmae', '{}', 'h', 0, 2, 0, 1, 0, '[]', :now, :now, :key)"
                    ),
                    {"id": job_id, "now": now, "key": f"k-{job_id}"},
                )
        upgrade_to_head(engine)
        with engine.connect() as connection:
            token = connection.execute(text("SELECT role, owner, expires_at FROM api_tokens WHERE id = 3")).one()
            jobs = connection.execute(
                text("SELECT owner, idempotency_key, idempotency_token_id FROM jobs ORDER BY id")
            ).all()
        assert tuple(token) == ("admin", "ci", None), "a token that could do everything keeps doing so"
        assert [tuple(job) for job in jobs] == [(None, "k-8", None), (None, "k-9", None)]
    finally:
        engine.dispose()
