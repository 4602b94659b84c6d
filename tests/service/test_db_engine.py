"""PostgreSQL connections time out and are kept alive on both ends, so a partitioned scheduler-lease
holder loses its session (and the lease) in about a minute, not hours (issue 10, finding 8)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from service.store.db import (
    CONNECT_TIMEOUT_S,
    KEEPALIVES_COUNT,
    KEEPALIVES_IDLE_S,
    KEEPALIVES_INTERVAL_S,
    make_engine,
)


class Refused(Exception):
    pass


def test_a_postgresql_engine_connects_with_a_timeout_keepalives_and_pre_ping() -> None:
    engine = make_engine("postgresql+psycopg://mmae@db.invalid:5432/mmae")
    seen: dict[str, Any] = {}

    @event.listens_for(engine, "do_connect")
    def capture(_dialect, _record, _cargs, cparams) -> None:
        seen.update(cparams)
        raise Refused  # nothing is dialled

    with pytest.raises(Refused):
        engine.connect()
    assert seen["connect_timeout"] == CONNECT_TIMEOUT_S
    assert (seen["keepalives"], seen["keepalives_idle"]) == (1, KEEPALIVES_IDLE_S)
    assert (seen["keepalives_interval"], seen["keepalives_count"]) == (KEEPALIVES_INTERVAL_S, KEEPALIVES_COUNT)
    assert f"tcp_keepalives_idle={KEEPALIVES_IDLE_S}" in seen["options"]
    assert engine.pool._pre_ping
    engine.dispose()


@pytest.mark.postgres
def test_postgresql_sessions_carry_the_keepalive_settings(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    with engine.connect() as connection:
        parameters = connection.connection.dbapi_connection.info.get_parameters()
        assert parameters["connect_timeout"] == str(CONNECT_TIMEOUT_S)
        assert parameters["keepalives_idle"] == str(KEEPALIVES_IDLE_S)
        assert connection.scalar(text("SHOW tcp_keepalives_idle")) == str(KEEPALIVES_IDLE_S)
        assert connection.scalar(text("SHOW tcp_keepalives_interval")) == str(KEEPALIVES_INTERVAL_S)
        assert connection.scalar(text("SHOW tcp_keepalives_count")) == str(KEEPALIVES_COUNT)
    engine.dispose()
