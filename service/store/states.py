"""The job state machine: explicit states, allowed transitions, terminal states.

    queued -> starting -> running -> succeeded
       |         |           |----> failed
       |         |           |----> queued      (automatic retry after a worker died)
       |         |           '----> cancelling -> cancelled
       '---------'----> cancelled / failed      (cancel before start, or can never fit)

Terminal states never change by themselves. A user's explicit retry re-opens a failed or
cancelled job (-> queued) with a new attempt; that is the only way out of a terminal state.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptStatus(StrEnum):
    PENDING = "pending"  # submitted to Ray, not yet running
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"  # stopped on request


TERMINAL: frozenset[JobStatus] = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.STARTING, JobStatus.RUNNING, JobStatus.CANCELLING})

_AUTOMATIC: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.STARTING, JobStatus.CANCELLED, JobStatus.FAILED}),
    JobStatus.STARTING: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.CANCELLING}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.QUEUED, JobStatus.CANCELLING}),
    JobStatus.CANCELLING: frozenset({JobStatus.CANCELLED, JobStatus.SUCCEEDED, JobStatus.FAILED}),
}
_USER_RETRY: frozenset[JobStatus] = frozenset({JobStatus.FAILED, JobStatus.CANCELLED})


class InvalidTransition(ValueError):
    """Raised when a job is asked to move along an edge the state machine does not have."""


def check_transition(current: JobStatus, new: JobStatus, *, user_retry: bool = False) -> None:
    """Raise ``InvalidTransition`` unless ``current -> new`` is an edge of the machine."""
    if user_retry:
        if current in _USER_RETRY and new is JobStatus.QUEUED:
            return
        raise InvalidTransition(f"only failed or cancelled jobs can be retried (job is {current})")
    if new not in _AUTOMATIC.get(current, frozenset()):
        raise InvalidTransition(f"a {current} job cannot become {new}")
