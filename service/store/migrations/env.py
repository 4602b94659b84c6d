"""Alembic environment: migrates ``service.store.models.Base.metadata`` on SQLite (batch mode) or PostgreSQL.

The API passes its own connection in ``config.attributes["connection"]``; the ``alembic`` command
line connects to ``sqlalchemy.url`` or, when unset, to the URL the service settings resolve.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection, text

from service.settings import Settings
from service.store.db import make_engine
from service.store.models import Base

MIGRATION_LOCK_ID = 7_262_001  # PostgreSQL advisory lock: replicas starting together migrate one at a time


def configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_on(connection: Connection) -> None:
    configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})"))
        context.run_migrations()


def database_url() -> str:
    return context.config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url


def run_offline() -> None:
    url = database_url()
    context.configure(
        url=url,
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    engine = make_engine(database_url())
    try:
        with engine.begin() as own_connection:
            run_on(own_connection)
    finally:
        engine.dispose()


if context.config.config_file_name and "connection" not in context.config.attributes:
    fileConfig(context.config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_offline()
else:
    run_online()
