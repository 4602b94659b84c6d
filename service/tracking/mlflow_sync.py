"""MLflow off the scheduler's path: a thread of its own makes MLflow agree with the database.

The database is the outbox. What MLflow should hold follows from job and sweep rows the scheduler
commits anyway, so nothing waits in memory that an API restart could lose, and no second table has to
be kept in step. Each pass:

1. opens the run of every job that has run (``started_at``) and has none yet (``mlflow_run_id``), with
   its sweep's parent run; a run created by a pass that died before recording it is found by its tags;
2. re-opens the runs of running jobs (and of their sweeps) that MLflow has as ended (a user retry);
3. closes every run MLflow has as RUNNING whose job ended in the database (FINISHED, FAILED, KILLED),
   after sending the metric points SQL has and the run lacks (a job that ran while MLflow was down), and
   every sweep parent run whose cells all ended, storing the sweep's report on it first.

The scheduler wakes the thread after every pass (``Tracker.wake``); it also runs every
``SYNC_INTERVAL_S``. A pass that fails (MLflow unreachable: each call gives up after
``tracker.MLFLOW_HTTP_TIMEOUT_S``, with no retries of MLflow's own) is logged once and tried again after
a backoff that doubles up to ``SYNC_BACKOFF_MAX_S``. Admission, cancel and shutdown never wait for it:
the thread is a daemon, and a call in flight at shutdown ends with its timeout.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload, sessionmaker

from service.store.models import Job, Sweep
from service.store.states import TERMINAL, JobStatus
from service.tracking.sweep_report import publish_report
from service.tracking.tracker import Tracker

log = logging.getLogger(__name__)
SYNC_INTERVAL_S = 5.0  # a pass at least this often, woken or not
SYNC_MIN_GAP_S = 0.2  # passes woken in a burst (many jobs changing at once) are merged
SYNC_BACKOFF_S = 1.0  # after a failed pass: 1, 2, 4, ... s
SYNC_BACKOFF_MAX_S = 60.0
OPEN_BATCH = 50  # runs opened per pass


def sync_pass(factory: sessionmaker[Session], tracker: Tracker) -> None:
    """One pass of the three steps above; raises when MLflow cannot be reached (nothing was half done
    that the next pass would not finish)."""
    tracker.reachable()
    with factory() as session:
        _open_runs(session, tracker)
        _reopen_runs(session, tracker)
        _close_runs(session, tracker)


def _open_runs(session: Session, tracker: Tracker) -> None:
    jobs = session.scalars(
        select(Job)
        .where(Job.mlflow_run_id.is_(None), Job.started_at.is_not(None))
        .options(selectinload(Job.sweep))
        .order_by(Job.id)
        .limit(OPEN_BATCH)
    ).all()
    session.expunge_all()  # the rows stay readable, and nothing is held while MLflow answers
    session.rollback()
    for job in jobs:
        parent = _sweep_run(session, job.sweep, tracker) if job.sweep is not None else None
        run_id = tracker.job_run(job, parent)
        # A plain UPDATE: the scheduler may have moved the job meanwhile (its status is the row's version).
        session.execute(update(Job).where(Job.id == job.id, Job.mlflow_run_id.is_(None)).values(mlflow_run_id=run_id))
        session.commit()


def _sweep_run(session: Session, sweep: Sweep, tracker: Tracker) -> str:
    if sweep.mlflow_parent_run_id is None:
        run_id = tracker.sweep_run(sweep)
        session.execute(
            update(Sweep)
            .where(Sweep.id == sweep.id, Sweep.mlflow_parent_run_id.is_(None))
            .values(mlflow_parent_run_id=run_id)
        )
        session.commit()
        sweep.mlflow_parent_run_id = run_id
    return sweep.mlflow_parent_run_id


def _reopen_runs(session: Session, tracker: Tracker) -> None:
    rows = session.execute(
        select(Job.mlflow_run_id, Sweep.mlflow_parent_run_id)
        .outerjoin(Sweep, Sweep.id == Job.sweep_id)
        .where(Job.status == JobStatus.RUNNING, Job.mlflow_run_id.is_not(None))
    ).all()
    session.rollback()
    run_ids = sorted({run_id for row in rows for run_id in row if run_id is not None})
    for run_id in list(tracker.ended_among(run_ids)):
        tracker.mark_running(run_id)


def _close_runs(session: Session, tracker: Tracker) -> None:
    running = list(tracker.running_runs())
    if not running:
        return
    ended = session.execute(
        select(Job.id, Job.mlflow_run_id, Job.status).where(Job.mlflow_run_id.in_(running), Job.status.in_(TERMINAL))
    ).all()
    session.rollback()
    engine = session.get_bind()
    for job_id, run_id, status in ended:
        sent = tracker.backfill_metrics(engine, job_id, run_id)
        if sent:
            log.info("MLflow run %s of job %s: %d metric points back-filled from SQL", run_id, job_id, sent)
        tracker.finish_run(run_id, JobStatus(status))
    sweeps = session.scalars(
        select(Sweep).where(Sweep.mlflow_parent_run_id.in_(running)).options(selectinload(Sweep.jobs))
    ).all()
    session.rollback()
    for sweep in sweeps:
        statuses = {JobStatus(cell.status) for cell in sweep.jobs}
        if statuses <= TERMINAL:
            publish_report(session, sweep, tracker)
            tracker.finish_run(sweep.mlflow_parent_run_id, _sweep_outcome(statuses))


def _sweep_outcome(statuses: set[JobStatus]) -> JobStatus:
    """A finished sweep's status: failed if any cell failed, else cancelled if any was, else succeeded."""
    for status in (JobStatus.FAILED, JobStatus.CANCELLED):
        if status in statuses:
            return status
    return JobStatus.SUCCEEDED


class MlflowSync:
    """Runs ``sync_pass`` in a daemon thread: when ``tracker.wake()`` was called, at least every
    ``SYNC_INTERVAL_S``, and after a failure not before its backoff."""

    def __init__(self, tracker: Tracker, factory: sessionmaker[Session]) -> None:
        self.tracker, self.factory = tracker, factory
        self._stop = threading.Event()
        self.failures = 0

    def start(self) -> None:
        self._stop.clear()
        threading.Thread(target=self._run, name="mlflow-sync", daemon=True).start()

    def stop(self) -> None:
        """Ask the thread to end after the call in flight; returns at once."""
        self._stop.set()
        self.tracker.changed.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.tracker.changed.clear()
            try:
                sync_pass(self.factory, self.tracker)
            except Exception as error:  # any tracking-server or database failure: try again later
                self.failures += 1
                if self.failures == 1:
                    log.warning("MLflow sync: %s (retrying with backoff; the scheduler goes on)", error)
            else:
                if self.failures:
                    log.info("MLflow sync: caught up after %d failed passes", self.failures)
                self.failures = 0
            if self.failures:
                self._stop.wait(min(SYNC_BACKOFF_MAX_S, SYNC_BACKOFF_S * 2 ** (self.failures - 1)))
            else:
                self.tracker.changed.wait(SYNC_INTERVAL_S)
                self._stop.wait(SYNC_MIN_GAP_S)
