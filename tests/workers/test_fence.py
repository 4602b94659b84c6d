"""The fencing rule on real databases (SQLite and PostgreSQL): only a job's current attempt writes, a
stale one is stopped (by its own writes, by its lifeline's heartbeat) and leaves the current attempt's
checkpoints untouched; a worker whose supervisor is gone ends itself."""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import Engine, select

from mmae.checkpoint import last_checkpoint, load_checkpoint
from mmae.config import TrainConfig
from mmae.train import fit
from service.store.states import AttemptStatus
from tests.tiny_config import tiny
from workers.fence import CURRENT_STATUSES, AttemptFenced
from workers.lifeline import Lifeline
from workers.reporter import Reporter, connect
from workers.spec import EXIT_FENCED
from workers.tables import attempt_progress

if TYPE_CHECKING:
    from conftest import AttemptRows

JOB = 3
TINY = TrainConfig.model_validate(
    tiny(method="mae", steps=8, checkpoint_every=2, **{"monitor.every": 4, "eval.enabled": False})
)


@pytest.fixture
def engine(migrated_url: str) -> Engine:
    return connect(migrated_url)


@pytest.fixture
def rows(engine: Engine, attempt_rows: type[AttemptRows]) -> AttemptRows:
    rows = attempt_rows(engine, JOB)
    rows.start(1)
    return rows


def heartbeat(engine: Engine, attempt_id: int) -> datetime | None:
    with engine.connect() as connection:
        query = select(attempt_progress.c.heartbeat_at).where(attempt_progress.c.attempt_id == attempt_id)
        return connection.execute(query).scalar_one_or_none()


def test_the_fence_admits_exactly_the_service_s_live_attempt_statuses() -> None:
    live = {AttemptStatus.PENDING, AttemptStatus.RUNNING}
    assert set(CURRENT_STATUSES) == {status.value for status in live}


class FenceAt(Reporter):
    """A reporter whose attempt the service ends once training reaches ``end_at``."""

    def __init__(self, *args, rows: AttemptRows, end_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.rows, self.end_at = rows, end_at

    def on_metrics(self, step: int, metrics: dict[str, float]) -> None:
        if step == self.end_at and "train/loss" in metrics:
            self.rows.end(1)
            self.rows.start(2)
        super().on_metrics(step, metrics)


def test_a_stale_trainer_stops_at_its_next_write_and_never_replaces_last_pt(
    engine: Engine, rows: AttemptRows, tmp_path: Path
) -> None:
    reporter = FenceAt(engine, job_id=JOB, attempt_id=1, rows=rows, end_at=3, flush_interval_s=3600)
    with pytest.raises(AttemptFenced):
        fit(TINY, tmp_path, [reporter])  # its checkpoint of step 4 is refused before publication
    assert load_checkpoint(last_checkpoint(tmp_path))["step"] == 2
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_00000002.pt"]


def test_a_lifeline_beats_while_current_and_ends_the_process_once_fenced(engine: Engine, rows: AttemptRows) -> None:
    ended = threading.Event()
    codes: list[int] = []
    lifeline = Lifeline(
        engine,
        job_id=JOB,
        attempt_id=1,
        interval_s=0.1,
        poll_s=0.05,
        exit_process=lambda code: (codes.append(code), ended.set()),
    )
    lifeline.start()
    try:
        first = heartbeat(engine, 1)
        time.sleep(0.4)
        assert heartbeat(engine, 1) > first and not ended.is_set()
        rows.end(1)
        assert ended.wait(5), "a fenced attempt's lifeline did not end it"
        assert codes == [EXIT_FENCED]
    finally:
        lifeline.stop()


def test_a_stale_attempt_is_refused_on_its_first_heartbeat(engine: Engine, rows: AttemptRows) -> None:
    rows.end(1)
    lifeline = Lifeline(engine, job_id=JOB, attempt_id=1, interval_s=1.0, exit_process=pytest.fail)
    with pytest.raises(AttemptFenced, match="has it as failed"):
        lifeline.start()
    with pytest.raises(AttemptFenced, match="has no record of it"):
        Lifeline(engine, job_id=JOB, attempt_id=99, interval_s=1.0, exit_process=pytest.fail).start()


def test_a_lifeline_ends_the_process_when_its_supervisor_is_gone(engine: Engine, rows: AttemptRows) -> None:
    ended = threading.Event()
    codes: list[int] = []
    lifeline = Lifeline(
        engine,
        job_id=JOB,
        attempt_id=1,
        interval_s=60,
        poll_s=0.05,
        exit_process=lambda code: (codes.append(code), ended.set()),
    )
    lifeline.start()
    try:
        lifeline.parent_pid = -1  # as if re-parented: the pid it started under is no longer its parent
        assert ended.wait(5) and codes == [1]
    finally:
        lifeline.stop()
