"""The queue in our database, over a Ray cluster that has none: admission, reconciliation, cancel, retry.

Admission takes queued jobs by priority (highest first), then FIFO, and starts each whose CPUs and
GPUs (``workers`` x per-worker) fit in Ray's cluster totals minus what our active jobs hold. A job
that does not fit still reserves its share, so smaller jobs behind it cannot starve it; a job whose
workers the cluster's alive nodes could never all hold fails at once; a sweep never runs more than
``max_concurrency`` cells. Reconciliation reads Ray's status of every active job's latest attempt and
drives the state machine (through ``service.scheduling.attempts``), retrying dead workers from their
last checkpoint. Both are plain functions of a Session and a ``SchedulerContext`` (the Ray client,
settings and tracker); ``SchedulerLoop`` drives them from the API's lifespan (in the one process that
holds the scheduler lease, see ``service.scheduling.leader``). Ray's cluster totals are refreshed by
the reconcile pass (every ``RESOURCES_REFRESH_S``), not per admission; a new or retried job wakes the
loop at once, and a just-submitted attempt is polled every ``starting_poll_s`` until it runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

from sqlalchemy import Row, func, select, tuple_
from sqlalchemy.orm import Session, selectinload, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from service.cluster.ray_client import ClusterResources, RayBusy, RayClient, RayJobState, RayUnavailable
from service.scheduling.attempts import (
    STATUS_CHANGED,
    end_attempt,
    finish,
    mark_running,
    move,
    requeue,
    start_attempt,
    stopped,
    submit,
    succeed,
)
from service.scheduling.context import SchedulerContext
from service.store.clock import as_utc, utcnow
from service.store.models import Attempt, AttemptProgress, Job, Sweep
from service.store.states import ACTIVE, AttemptStatus, JobStatus
from service.tracking.mlflow_sync import MlflowSync
from workers.spec import EXIT_PERMANENT
from workers.tables import json_finite

log = logging.getLogger(__name__)
EPSILON = 1e-9  # fractional GPUs: 0.1 * 10 must fit in 1.0
STARTING_POLL_BATCH = 8  # a fast pass asks Ray about at most this many starting attempts
RESOURCES_REFRESH_S = 5.0  # a reconcile pass re-reads Ray's cluster totals when they are older than this


ADMIT_PAGE = 64  # queued rows read per query; a pass stops reading once nothing more could fit


def admit_queued(session: Session, context: SchedulerContext) -> list[int]:
    """Start every queued job that fits, in priority-then-FIFO order; returns the ids started.

    Reads only what deciding takes: the queue's resource columns, a page at a time, until the cluster
    has nothing left (every job needs CPUs); a full ORM row only for a job that starts or fails. With
    10,000 jobs queued behind a full cluster a pass reads one page (``bench/control_plane.py``).
    """
    if session.scalar(select(Job.id).where(Job.status == JobStatus.QUEUED).limit(1)) is None:
        return []
    cluster = context.ray.cluster_resources()
    _fail_never_fitting(session, cluster)
    free = _free(session, cluster)
    per_sweep = Counter(
        session.scalars(select(Job.sweep_id).where(Job.status.in_(ACTIVE), Job.sweep_id.is_not(None))).all()
    )
    started = []
    for row in _queue(session):
        if row.max_concurrency is not None and per_sweep[row.sweep_id] >= row.max_concurrency:
            continue
        fits = _fits(row, free)
        free["CPU"] -= row.cpus  # taken, or reserved so the jobs behind cannot starve it
        free["GPU"] -= row.gpus
        job = session.get(Job, row.id) if fits else None
        if job is not None and job.status == JobStatus.QUEUED:
            start_attempt(session, context, job)
            per_sweep[row.sweep_id] += 1
            started.append(job.id)
        if free["CPU"] <= -EPSILON:  # no job behind (each needs CPUs) can fit any more
            break
    return started


def _fits(row: Row, free: dict[str, float]) -> bool:
    """Whether a queued job's CPUs and GPUs fit in what is free. A resource the job does not ask for
    holds nothing back: GPUs that a waiting GPU job reserved do not stop a CPU job behind it."""
    needs = (("CPU", row.cpus), ("GPU", row.gpus))
    return all(need <= free[name] + EPSILON for name, need in needs if need > 0)


def _queue(session: Session) -> Iterator[Row]:
    """The queued jobs' admission columns in priority-then-FIFO order: a priority level at a time (the
    highest first), ``ADMIT_PAGE`` rows at a time within it, each page a range of ``ix_jobs_queue``
    (keyset pages: jobs that start meanwhile leave the queue without shifting them)."""
    queued = Job.status == JobStatus.QUEUED
    priority = session.scalar(select(func.max(Job.priority)).where(queued))
    while priority is not None:
        yield from _queue_level(session, priority)
        priority = session.scalar(select(func.max(Job.priority)).where(queued, Job.priority < priority))


def _queue_level(session: Session, priority: int) -> Iterator[Row]:
    level = (
        select(
            Job.id,
            Job.queued_at,
            Job.sweep_id,
            Sweep.max_concurrency,
            Job.cpus_held.label("cpus"),
            Job.gpus_held.label("gpus"),
        )
        .outerjoin(Sweep, Sweep.id == Job.sweep_id)
        .where(Job.status == JobStatus.QUEUED, Job.priority == priority)
        .order_by(Job.queued_at, Job.id)
        .limit(ADMIT_PAGE)
    )
    page = session.execute(level).all()
    while page:
        yield from page
        if len(page) < ADMIT_PAGE:
            return
        last = page[-1]
        page = session.execute(level.where(tuple_(Job.queued_at, Job.id) > (last.queued_at, last.id))).all()


def _fail_never_fitting(session: Session, cluster: ClusterResources) -> None:
    """Fail the queued jobs whose workers the cluster's alive nodes could never all hold: checked once per
    distinct shape (CPUs, GPUs, workers) in the queue, so wherever such a job waits, it fails now."""
    if not cluster.nodes:
        return
    shapes = session.execute(
        select(Job.num_cpus, Job.num_gpus, Job.workers).where(Job.status == JobStatus.QUEUED).distinct()
    ).all()
    for shape in shapes:
        reason = _never_fits(shape, cluster)
        if reason is None:
            continue
        same_shape = select(Job).where(
            Job.status == JobStatus.QUEUED,
            Job.num_cpus == shape.num_cpus,
            Job.num_gpus == shape.num_gpus,
            Job.workers == shape.workers,
        )
        for job in session.scalars(same_shape).all():
            finish(job, JobStatus.FAILED, error=reason)
            session.commit()


def _free(session: Session, cluster: ClusterResources) -> dict[str, float]:
    """Cluster totals minus the CPUs and GPUs our active jobs hold (all of each job's workers)."""
    cpus, gpus = session.execute(
        select(func.coalesce(func.sum(Job.cpus_held), 0.0), func.coalesce(func.sum(Job.gpus_held), 0.0)).where(
            Job.status.in_(ACTIVE)
        )
    ).one()
    return {"CPU": cluster.total.get("CPU", 0.0) - cpus, "GPU": cluster.total.get("GPU", 0.0) - gpus}


def _never_fits(shape: Job | Row, cluster: ClusterResources) -> str | None:
    """Why the cluster's alive nodes could never hold all the workers of a job of ``shape`` (its
    ``workers``, ``num_cpus``, ``num_gpus``) at once, or None when they could (or Ray reports no nodes
    yet). Placement does not change the answer: Ray Train's PACK and SPREAD are preferences, and either
    places workers wherever they fit."""
    if not cluster.nodes:
        return None
    places = worker_places(cluster, shape.num_cpus, shape.num_gpus)
    if places >= shape.workers:
        return None
    need = f"{shape.num_cpus:g} CPU and {shape.num_gpus:g} GPU"
    if shape.workers == 1:
        return (
            f"can never fit: the job needs {need} on one node, but no Ray node has that much (the most "
            f"any node has: {cluster.largest('CPU'):g} CPU, {cluster.largest('GPU'):g} GPU)"
        )
    return (
        f"can never fit: the job needs {shape.workers} workers x {need}, but the cluster's "
        f"{len(cluster.nodes)} Ray node(s) can place at most {places}"
    )


def worker_places(cluster: ClusterResources, num_cpus: float, num_gpus: float) -> float:
    """How many workers of ``num_cpus`` and ``num_gpus`` each the alive nodes could hold at once: the sum
    over nodes of ``_node_places``."""
    return sum(_node_places(node["resources"], num_cpus, num_gpus) for node in cluster.nodes)


def _node_places(resources: dict[str, float], num_cpus: float, num_gpus: float) -> float:
    """Whole workers one node of ``resources`` (its totals) holds: the fewest any resource allows, a
    resource the worker does not need limiting nothing (``inf`` when it needs none)."""
    needs = (("CPU", num_cpus), ("GPU", num_gpus))
    limits = [math.floor(resources.get(name, 0.0) / need + EPSILON) for name, need in needs if need > 0]
    return min(limits, default=math.inf)


def reconcile(session: Session, context: SchedulerContext) -> list[int]:
    """Refresh Ray's cluster totals (admission reads the cached copy), then apply Ray's status of every
    active job's latest attempt (commits per job). Returns the ids of the jobs still starting."""
    ray = context.ray
    ray.cluster_resources(max_age_s=RESOURCES_REFRESH_S)
    jobs = session.scalars(
        select(Job).where(Job.status.in_(ACTIVE)).options(selectinload(Job.attempts)).order_by(Job.id)
    ).all()
    return _reconcile_jobs(session, context, jobs, lambda attempt: ray.status(attempt.ray_submission_id))


def reconcile_starting(session: Session, context: SchedulerContext) -> list[int]:
    """The fast pass between full ones, for jobs whose attempt was submitted and has not run yet: Ray
    alone is asked (about the ``STARTING_POLL_BATCH`` longest waiting) until some leave PENDING; only
    those jobs are then reconciled. Returns the ids of the jobs still starting."""
    waiting = session.execute(
        select(Attempt.job_id, Attempt.ray_submission_id)
        .join(Job, Job.id == Attempt.job_id)
        .where(Job.status == JobStatus.STARTING, Attempt.status == AttemptStatus.PENDING)
        .order_by(Attempt.submitted_at)
        .limit(STARTING_POLL_BATCH)
    ).all()
    session.rollback()  # end the read: nothing is held while Ray answers
    states = {job_id: context.ray.status(submission_id) for job_id, submission_id in waiting}
    moved = [job_id for job_id, state in states.items() if state is None or state.status != "PENDING"]
    if moved:
        moved_jobs = select(Job).where(Job.id.in_(moved), Job.status == JobStatus.STARTING)
        jobs = session.scalars(moved_jobs.options(selectinload(Job.attempts))).all()
        _reconcile_jobs(session, context, jobs, lambda attempt: states[attempt.job_id])
    return [job_id for job_id in states if job_id not in moved]


def _reconcile_jobs(
    session: Session,
    context: SchedulerContext,
    jobs: Sequence[Job],
    state_of: Callable[[Attempt], RayJobState | None],
) -> list[int]:
    """Apply ``state_of`` (Ray's status) of each job's latest attempt, committing per job; returns the
    ids of the jobs still starting."""
    starting = []
    for job in jobs:
        attempt = job.attempts[-1]
        try:
            _reconcile_attempt(session, context, job, attempt, state_of(attempt))
            session.commit()
        except RayBusy as error:  # Ray answered 5xx about this job: the others may still go through
            session.rollback()
            log.warning("reconciling job %s: %s", job.id, error)
        except RayUnavailable:
            session.rollback()
            raise
        except StaleDataError:
            session.rollback()
            log.info("job %s changed while being reconciled; next tick sees the new state", job.id)
        except Exception:  # one broken job must not stall the others
            session.rollback()
            log.exception("reconciling job %s failed", job.id)
        if job.status == JobStatus.STARTING:
            starting.append(job.id)
    return starting


def _reconcile_attempt(
    session: Session, context: SchedulerContext, job: Job, attempt: Attempt, state: RayJobState | None
) -> None:
    progress = session.get(AttemptProgress, attempt.id)
    never_ran = progress is None and attempt.started_at is None
    finished = progress is not None and progress.phase == "done"
    if state is None and never_ran and job.status != JobStatus.CANCELLING:
        _submit_again(session, context, job, attempt)
    elif state is not None and state.status in ("PENDING", "RUNNING"):
        _still_live(session, context, job, attempt, state, progress)
    elif state is not None and state.status == "SUCCEEDED" and finished:
        succeed(job, attempt, json_finite(progress.summary))
    elif job.status == JobStatus.CANCELLING:
        stopped(job, attempt)
    else:
        retry = state is None or state.exit_code != EXIT_PERMANENT
        end_attempt(job, attempt, _failure(state, context.ray, attempt), retry=retry)


def _submit_again(session: Session, context: SchedulerContext, job: Job, attempt: Attempt) -> None:
    """An attempt committed but not in Ray (the API died before submitting, or Ray failed transiently):
    submit it once its backoff is over; after ``submit_retry_s`` end it like a failed attempt (retried
    while the job has retries left)."""
    ray, settings = context.ray, context.settings
    waited = (utcnow() - as_utc(attempt.submitted_at)).total_seconds()
    if waited > settings.submit_retry_s:
        ray.forget_submission(attempt.ray_submission_id)
        end_attempt(job, attempt, f"Ray did not take the submission within {settings.submit_retry_s:g} s", retry=True)
    elif ray.submit_due(attempt.ray_submission_id):
        submit(session, context, job, attempt)


def _still_live(
    session: Session,
    context: SchedulerContext,
    job: Job,
    attempt: Attempt,
    state: RayJobState,
    progress: AttemptProgress | None,
) -> None:
    """A pending or running attempt: re-send a cancel, give up on a long wait or a silent worker, or
    note that it runs (``service.tracking.mlflow_sync`` then opens its job's MLflow run)."""
    ray, settings = context.ray, context.settings
    if job.status == JobStatus.CANCELLING:
        ray.stop(attempt.ray_submission_id)  # idempotent: covers a crash between commit and stop
        return
    if state.status == "PENDING":
        if utcnow() - as_utc(attempt.submitted_at) > timedelta(seconds=settings.pending_timeout_s):
            ray.stop(attempt.ray_submission_id)
            end_attempt(
                job,
                attempt,
                f"pending in Ray for more than {settings.pending_timeout_s:g} s (no node had room for it)",
                retry=True,
            )
        return
    silent = _silent_for(attempt, progress)
    if silent is not None and silent > settings.heartbeat_timeout_s:
        # Fenced first (the attempt is no longer current once this commits), then stopped in Ray.
        end_attempt(
            job,
            attempt,
            f"no heartbeat for {silent:.0f} s (limit "
            f"{settings.heartbeat_timeout_s:g} s): the worker hung or lost its node",
            retry=True,
        )
        session.commit()
        ray.stop(attempt.ray_submission_id)
        return
    mark_running(job, attempt)


def _silent_for(attempt: Attempt, progress: AttemptProgress | None) -> float | None:
    """Seconds since a running attempt's last heartbeat (or since it started running, before its
    first); None for an attempt not yet seen running."""
    last = progress.heartbeat_at if progress is not None else attempt.started_at
    return None if last is None else (utcnow() - as_utc(last)).total_seconds()


def _failure(state: RayJobState | None, ray: RayClient, attempt: Attempt, tail: int = 30) -> str:
    """Why an attempt ended without finishing (Ray's reason, first line) and the last lines of its log."""
    if state is None:
        return f"Ray has no record of {attempt.ray_submission_id} (the cluster restarted?)"
    if state.status == "SUCCEEDED":
        reason = "the worker exited before training ended (stopped from outside mmae?)"
    else:
        reason = (state.message or f"Ray job {state.status.lower()}").splitlines()[0]
        reason = reason.split(", last available logs")[0]  # Ray's own tail is 20,000 characters
    if state.exit_code is not None and "exit code" not in reason:
        reason += f" (exit code {state.exit_code})"
    try:
        lines = ray.logs(attempt.ray_submission_id).splitlines()[-tail:]
    except RayUnavailable:
        lines = []
    return reason + ("\n--- log tail ---\n" + "\n".join(lines) if lines else "")


def request_cancel(session: Session, context: SchedulerContext, job: Job) -> None:
    """Cancel a job: a queued one at once; a starting/running one moves to cancelling and Ray stops it
    (SIGTERM, then SIGKILL after ``stop_grace_s``); the reconciler then records it cancelled. The
    context's tracker is woken once the change is committed.

    Raises ``InvalidTransition`` for a job that already ended. Commits.
    """
    _retry_stale(session, job, lambda: _cancel(session, context.ray, job))
    context.tracker.wake()


def _cancel(session: Session, ray: RayClient, job: Job) -> None:
    status = JobStatus(job.status)
    if status == JobStatus.QUEUED:
        finish(job, JobStatus.CANCELLED)
        session.commit()
        return
    if status != JobStatus.CANCELLING:
        move(job, JobStatus.CANCELLING)
        job.cancel_requested_at = utcnow()
        session.commit()
    attempt = job.attempts[-1]
    try:
        ray.stop(attempt.ray_submission_id)
    except RayUnavailable as error:
        log.warning("cancel of job %s: %s (the reconciler will retry)", job.id, error)


def retry_job(session: Session, job: Job) -> None:
    """A user's retry of a failed or cancelled job: back to the queue (at its end) with a fresh retry
    budget; its next attempt resumes from the run's last checkpoint. Raises ``InvalidTransition``
    otherwise. Commits.
    """
    _retry_stale(session, job, lambda: _requeue(session, job))


def _requeue(session: Session, job: Job) -> None:
    requeue(job)
    session.commit()


def _retry_stale(session: Session, job: Job, action: Callable[[], None], tries: int = 3) -> None:
    """Run ``action``; when the job changed meanwhile (its status compare-and-set failed), re-read it and
    run it again, which decides afresh. The only retry of a stale job: the routes that call
    ``request_cancel`` and ``retry_job`` do not retry them."""
    for attempt in range(tries):
        try:
            return action()
        except StaleDataError:
            session.rollback()
            session.refresh(job)
            if attempt == tries - 1:
                raise


class SchedulerLoop:
    """Runs ``reconcile`` at start and every ``reconcile_interval_s``, ``admit_queued`` every
    ``scheduler_interval_s`` or at once when ``wake`` is called, and ``reconcile_starting`` every
    ``starting_poll_s`` while an attempt is starting; each in a worker thread. Failures are logged
    and retried next tick. While it runs, so does the MLflow sync (``service.tracking.mlflow_sync``), woken
    after every step that moved a job; the loop never waits for it.
    """

    def __init__(self, context: SchedulerContext, session_factory: sessionmaker[Session]) -> None:
        self.context, self.session_factory = context, session_factory
        self.mlflow = MlflowSync(context.tracker, session_factory)
        self._wake = asyncio.Event()
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ray_warned = False

    async def run(self) -> None:
        """Loop until ``stop()``; returns after the step in progress finishes."""
        self._loop = asyncio.get_running_loop()
        self.mlflow.start()
        try:
            await self._run()
        finally:
            self.mlflow.stop()

    async def _run(self) -> None:
        settings = self.context.settings
        next_reconcile = next_admit = 0.0
        starting: list[int] = []
        while not self._stopping:
            if time.monotonic() >= next_reconcile:
                starting = await self._step(reconcile)
                next_reconcile = time.monotonic() + settings.reconcile_interval_s
            elif starting:
                starting = await self._step(reconcile_starting)
            if self._wake.is_set() or time.monotonic() >= next_admit:
                self._wake.clear()
                starting += await self._step(admit_queued)
                next_admit = time.monotonic() + settings.scheduler_interval_s
            wake_at = min(next_reconcile, next_admit)
            if starting:
                wake_at = min(wake_at, time.monotonic() + settings.starting_poll_s)
            if self._stopping:  # stop() came during a step, and the admission pass may have cleared its wake
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, wake_at - time.monotonic()))

    def wake(self) -> None:
        """Run an admission pass now (a job was queued); safe to call from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def _step(self, action: Callable[..., list[int]]) -> list[int]:
        """Run ``action`` in a worker thread; the job ids it returns (none when it failed)."""
        return await asyncio.to_thread(self._run_step, action)

    def _run_step(self, action: Callable[..., list[int]]) -> list[int]:
        try:
            self.context.ray.connect()
            with self.session_factory() as session:
                ids = action(session, self.context)
                changed = session.info.get(STATUS_CHANGED, False)
            self._ray_warned = False
            if changed:  # an idle pass leaves MLflow alone (its own 5 s pass still runs)
                self.context.tracker.wake()
            return ids
        except RayUnavailable as error:
            if not self._ray_warned:
                log.warning("scheduler: %s", error)
            self._ray_warned = True
        except StaleDataError:
            log.info("scheduler: a job changed during %s; retrying next tick", action.__name__)
        except Exception:  # the loop must outlive any one failure
            log.exception("scheduler: %s failed", action.__name__)
        return []
