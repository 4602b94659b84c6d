"""The job state machine: terminal states are terminal; only a user retry re-opens them."""

from __future__ import annotations

import pytest

from service.store.states import ACTIVE, TERMINAL, InvalidTransition, JobStatus, check_transition


@pytest.mark.parametrize("terminal", sorted(TERMINAL))
@pytest.mark.parametrize("target", list(JobStatus))
def test_terminal_states_never_move_by_themselves(terminal: JobStatus, target: JobStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(terminal, target)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (JobStatus.QUEUED, JobStatus.STARTING),
        (JobStatus.STARTING, JobStatus.RUNNING),
        (JobStatus.RUNNING, JobStatus.SUCCEEDED),
        (JobStatus.RUNNING, JobStatus.QUEUED),
        (JobStatus.RUNNING, JobStatus.CANCELLING),
        (JobStatus.CANCELLING, JobStatus.CANCELLED),
        (JobStatus.QUEUED, JobStatus.CANCELLED),
        (JobStatus.QUEUED, JobStatus.FAILED),
    ],
)
def test_lifecycle_edges_are_allowed(current: JobStatus, new: JobStatus) -> None:
    check_transition(current, new)


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.QUEUED, JobStatus.SUCCEEDED),
        (JobStatus.CANCELLING, JobStatus.RUNNING),
        (JobStatus.CANCELLING, JobStatus.QUEUED),
    ],
)
def test_skipping_states_is_rejected(current: JobStatus, new: JobStatus) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(current, new)


@pytest.mark.parametrize("status", list(JobStatus))
def test_user_retry_reopens_only_failed_or_cancelled(status: JobStatus) -> None:
    if status in (JobStatus.FAILED, JobStatus.CANCELLED):
        check_transition(status, JobStatus.QUEUED, user_retry=True)
    else:
        with pytest.raises(InvalidTransition):
            check_transition(status, JobStatus.QUEUED, user_retry=True)


def test_active_and_terminal_are_disjoint() -> None:
    assert not ACTIVE & TERMINAL
