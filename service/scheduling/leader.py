"""Which API process runs the scheduler loop: the one that holds the database's scheduler lease.

Any number of API processes (replicas, ``mmae serve --workers N``) may serve one database; exactly one
runs the scheduler loop at a time. The lease is a lock that is released when its holder dies: a
PostgreSQL session advisory lock (on one connection the holder keeps open), or for SQLite an ``flock``
on a file beside the database. The other processes try again every ``lease_retry_s``, so one of them
takes over soon after the holder dies, and a holder that loses its lock stops its loop.

A job queued through a process that does not lead is admitted at once all the same on PostgreSQL: that
process sends a ``NOTIFY`` on the queue channel, which the leader LISTENs to on its lease connection.
On SQLite it waits for the leader's next admission pass (``scheduler_interval_s``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import psycopg
from sqlalchemy import Connection, Engine, make_url, text
from sqlalchemy.exc import DBAPIError

from service.scheduling.scheduler import SchedulerLoop

log = logging.getLogger(__name__)
ADVISORY_LOCK_KEY = 0x6D6D_6165_5343_4844  # "mmaeSCHD": one key per database (advisory locks are per database)
QUEUE_CHANNEL = "mmae_queue"  # NOTIFY channel: a job was queued through a process that does not lead
NOTICE_WAIT_S = 0.5  # the leader's watcher waits this long for a notice between checks of its lease


class Lease(Protocol):
    def try_acquire(self) -> bool: ...  # True when this process holds the lease now

    def held(self) -> bool: ...  # False once a held lease was lost (its connection died)

    def release(self) -> None: ...

    def notify_queued(self) -> None: ...  # tell the holder that a job was queued (from any process)

    def wait_for_notice(self, timeout_s: float) -> bool: ...  # holder: True when told within timeout_s


class PostgresLease:
    """A session advisory lock on a connection kept out of the pool while the lease is held (its calls are
    serialised: the leader's watcher and its release may run in two threads)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._connection: Connection | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            return self._try_acquire()

    def _try_acquire(self) -> bool:
        if self._connection is not None:
            return True
        connection = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            acquired = connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        except DBAPIError:
            connection.close()
            raise
        if acquired:
            connection.execute(text(f"LISTEN {QUEUE_CHANNEL}"))
            self._connection = connection
        else:
            connection.close()
        return bool(acquired)

    def held(self) -> bool:
        with self._lock:
            if self._connection is None:
                return False
            try:
                self._connection.execute(text("SELECT 1"))
                return True
            except DBAPIError:  # the session, and with it the lock, is gone
                self._drop()
                return False

    def release(self) -> None:
        with self._lock:
            if self._connection is not None:
                with contextlib.suppress(DBAPIError):
                    self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ADVISORY_LOCK_KEY})
                self._drop()

    def notify_queued(self) -> None:
        with self.engine.connect() as connection:
            connection.execute(text(f"NOTIFY {QUEUE_CHANNEL}"))
            connection.commit()

    def wait_for_notice(self, timeout_s: float) -> bool:
        with self._lock:
            if self._connection is None:
                return False
            driver = self._connection.connection.driver_connection
            try:
                return any(True for _ in driver.notifies(timeout=timeout_s, stop_after=1))
            except psycopg.Error:  # the session is gone; held() says so next
                return False

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.invalidate()  # never back to the pool: it held (or may still hold) the session lock
            connection.close()


class FileLease:
    """An exclusive ``flock`` on ``path``; the operating system releases it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the lock
            self._fd = None

    def notify_queued(self) -> None:
        """Nothing to send: SQLite has no notices (the leader admits at its next pass)."""

    def wait_for_notice(self, timeout_s: float) -> bool:
        time.sleep(timeout_s)
        return False


def lease_for(engine: Engine, data_dir: Path) -> Lease:
    """The scheduler lease of ``engine``'s database: an advisory lock on PostgreSQL; on SQLite a lock file
    beside the database file (in ``data_dir`` for an in-memory database)."""
    if engine.dialect.name == "postgresql":
        return PostgresLease(engine)
    database = make_url(engine.url).database
    if database and database != ":memory:":
        return FileLease(Path(database).resolve().with_name(Path(database).name + ".scheduler-lock"))
    return FileLease(data_dir / "scheduler.lock")


class SchedulerLeader:
    """Runs a fresh ``SchedulerLoop`` (from ``make_loop``) in this process while it holds ``lease``; asks
    for the lease every ``retry_s`` while another process holds it and checks a held one as often."""

    def __init__(self, make_loop: Callable[[], SchedulerLoop], lease: Lease, retry_s: float) -> None:
        self.make_loop, self.lease, self.retry_s = make_loop, lease, retry_s
        self.loop: SchedulerLoop | None = None
        self._stopping = asyncio.Event()

    @property
    def leading(self) -> bool:
        return self.loop is not None

    async def run(self) -> None:
        """Lead whenever the lease is free, until ``stop()``."""
        while not self._stopping.is_set():
            if await self._acquire():
                await self._lead()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.retry_s)

    def wake(self) -> None:
        """A job was queued: admit it now, here when this process leads, else through a notice to the leader.
        Called from request threads; a failed notice only delays the job to the leader's next pass."""
        if self.loop is not None:
            self.loop.wake()
            return
        try:
            self.lease.notify_queued()
        except DBAPIError as error:
            log.warning("could not notify the scheduler: %s", error)

    def stop(self) -> None:
        self._stopping.set()
        if self.loop is not None:
            self.loop.stop()

    async def _acquire(self) -> bool:
        try:
            return await asyncio.to_thread(self.lease.try_acquire)
        except DBAPIError as error:
            log.warning("scheduler lease: database unavailable: %s", error)
            return False

    async def _lead(self) -> None:
        log.info("this process runs the scheduler loop")
        self.loop = self.make_loop()
        if self._stopping.is_set():  # stop() came while the lease was being taken
            self.loop.stop()
        watch = asyncio.create_task(self._watch(self.loop))
        try:
            await self.loop.run()
        finally:
            watch.cancel()
            self.loop = None
            await asyncio.to_thread(self.lease.release)

    async def _watch(self, loop: SchedulerLoop) -> None:
        """Wake ``loop`` on every notice from another process; stop it when the lease is lost (another
        process may hold it by now). The lease is checked every ``retry_s``."""
        checked = time.monotonic()
        while True:
            if await asyncio.to_thread(self.lease.wait_for_notice, min(NOTICE_WAIT_S, self.retry_s)):
                loop.wake()
            if time.monotonic() - checked >= self.retry_s:
                if not await asyncio.to_thread(self.lease.held):
                    break
                checked = time.monotonic()
        log.warning("scheduler lease lost: this process stops its scheduler loop")
        loop.stop()
