"""An attempt's lifeline: a heartbeat the service can trust, and an end when the attempt may not go on.

A daemon thread writes the attempt's ``attempt_progress.heartbeat_at`` every ``interval_s`` in a fenced
transaction (``workers.fence``), whatever the training thread is doing (building data, training,
evaluating). The service fails and retries an attempt whose heartbeat stops. The process ends at once,
with a line in its log saying why, when

- a heartbeat finds the attempt fenced: the service ended it or started a newer one, so nothing this
  process could still do would count (exit ``EXIT_FENCED``); or
- its parent, Ray's job supervisor, is gone (the process was re-parented): the supervisor would have
  stopped it, and the service retries the attempt elsewhere (exit 1).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine

from workers.fence import AttemptFenced, check_current
from workers.reporter import upsert_progress
from workers.spec import EXIT_FENCED

log = logging.getLogger(__name__)


class Lifeline:
    """Heartbeats for one attempt and the watchdog on its supervisor, on one daemon thread."""

    def __init__(
        self,
        engine: Engine,
        *,
        job_id: int,
        attempt_id: int,
        interval_s: float,
        poll_s: float = 0.5,
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self.engine, self.job_id, self.attempt_id = engine, job_id, attempt_id
        self.interval_s, self.poll_s, self.exit_process = interval_s, poll_s, exit_process
        self.parent_pid = os.getppid()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mmae-lifeline", daemon=True)

    def start(self) -> None:
        """Beat once now (raising ``AttemptFenced`` for a stale attempt), then keep beating in the background."""
        self.beat()
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join()

    def beat(self) -> None:
        """One fenced heartbeat: the progress row's ``heartbeat_at`` (the row is created if missing)."""
        row = {"attempt_id": self.attempt_id, "job_id": self.job_id, "heartbeat_at": datetime.now(UTC)}
        with self.engine.begin() as connection:
            upsert_progress(connection, row)
            check_current(connection, self.job_id, self.attempt_id)

    def _run(self) -> None:
        next_beat = self.interval_s
        waited = 0.0
        while not self._stopped.wait(self.poll_s):
            waited += self.poll_s
            if os.getppid() != self.parent_pid:
                self._end(1, f"its supervisor (pid {self.parent_pid}) is gone")
                return
            if waited < next_beat:
                continue
            next_beat = waited + self.interval_s
            try:
                self.beat()
            except AttemptFenced as fenced:
                self._end(EXIT_FENCED, str(fenced))
                return
            except Exception as error:  # the database is briefly unreachable: the service's timeout decides
                log.warning("heartbeat of attempt %s failed (will retry): %s", self.attempt_id, error)

    def _end(self, status: int, why: str) -> None:
        print(f"[mmae] stopping attempt {self.attempt_id} at once: {why}", flush=True)
        self.exit_process(status)
