"""A flush that runs on its own daemon thread, so the training thread hands work over and moves on.

The caller keeps what is to be written in state guarded by ``Flusher.cond`` and calls ``ask``; the
thread calls ``flush``, which takes that state under ``cond`` and writes it outside the lock. Asks made
while a flush runs are served together by the next one (a slow sink gets bigger batches, not a queue of
small ones). ``wait`` blocks until a given ask has been served. The first exception ``flush`` raises is
kept: the thread stops, and every later ``ask`` or ``wait`` raises it on the caller's thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Flusher:
    """Runs ``flush`` on one daemon thread named ``name`` whenever asked."""

    def __init__(self, name: str, flush: Callable[[], None]) -> None:
        self.cond = threading.Condition()
        self.name, self._flush = name, flush
        self._asked = self._served = 0
        self._error: BaseException | None = None
        self._closing = False
        self._thread: threading.Thread | None = None

    def ask(self) -> int:
        """Ask for a flush (starting the thread if it is not running); returns the ticket to ``wait`` on.
        Raises the flush's stored exception instead once one has failed."""
        with self.cond:
            self.raise_failure()
            self._asked += 1
            self._closing = False
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                self._thread.start()
            self.cond.notify_all()
            return self._asked

    def wait(self, ticket: int) -> None:
        """Block until the flush that serves ``ticket`` has finished; raise its exception if it failed."""
        with self.cond:
            self.cond.wait_for(lambda: self._served >= ticket or self._error is not None)
            self.raise_failure()

    @property
    def failed(self) -> bool:
        """True once a flush has failed (its exception is kept)."""
        return self._error is not None

    def raise_failure(self) -> None:
        """Raise the exception a flush failed with, if any (call with or without ``cond`` held)."""
        with self.cond:
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Let the thread end once every ask is served (a later ``ask`` starts a new one)."""
        with self.cond:
            self._closing = True
            self.cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self.cond:
                self.cond.wait_for(lambda: self._asked > self._served or self._closing)
                if self._asked == self._served:
                    return
                ticket = self._asked
            try:
                self._flush()
            except BaseException as error:  # kept and raised on the caller's thread (AttemptFenced included)
                with self.cond:
                    self._error = error
                    self.cond.notify_all()
                return
            with self.cond:
                self._served = ticket
                self.cond.notify_all()
