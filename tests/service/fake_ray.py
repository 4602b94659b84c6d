"""An in-memory Ray for the scheduler's tests: the ``RayClient`` protocol, each job's life driven by the test.

It behaves like ``RayJobsClient`` on every point the scheduler relies on: a new submission is PENDING
until the test runs it; a submission id Ray already has is refused (``RuntimeError``, as Ray's 400);
``status`` is None for a submission Ray has no record of (never submitted, or ``lose``); ``stop`` of a
live job ends it as STOPPED and answers True, of an ended or unknown one False; a scripted ``RayBusy``
on submit starts the same backoff as the real client (``SubmitBackoff``); while ``down``, every call
raises ``RayUnavailable`` and ``is_available`` is False. ``faults`` scripts the next errors per method.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from service.cluster.ray_client import ClusterResources, RayJobState, RayUnavailable, SubmitBackoff
from workers.spec import AttemptSpec

LIVE = ("PENDING", "RUNNING")


@dataclass
class FakeJob:
    """One submission as Ray holds it."""

    spec: AttemptSpec
    status: str = "PENDING"
    message: str | None = None
    exit_code: int | None = None
    logs: str = ""


class FakeRay:
    """Ray Jobs in memory over alive nodes of the given totals (one 4-CPU node by default)."""

    def __init__(self, *nodes: dict[str, float]) -> None:
        self.start_local = False
        self.nodes = [dict(node) for node in nodes] or [{"CPU": 4.0}]
        self.jobs: dict[str, FakeJob] = {}  # submission id -> job, in submission order
        self.faults: dict[str, list[Exception]] = defaultdict(list)  # method -> errors its next calls raise
        self.down = False
        self.on_submit: Callable[[str, AttemptSpec], None] | None = None  # called as Ray accepts a submission
        self._connected = False
        self._backoff = SubmitBackoff()

    # The RayClient protocol.

    @property
    def connected(self) -> bool:
        return self._connected

    def connect(self) -> None:
        self._answer("connect")
        self._connected = True

    def is_available(self) -> bool:
        return not self.down

    def submit(self, submission_id: str, spec: AttemptSpec) -> None:
        try:
            self._answer("submit")
        except RayUnavailable:
            self._backoff.failed(submission_id)
            raise
        if submission_id in self.jobs:
            raise RuntimeError(f"Ray answered 400: job with submission_id {submission_id} already exists")
        if self.on_submit is not None:
            self.on_submit(submission_id, spec)
        self.jobs[submission_id] = FakeJob(spec)
        self._backoff.forget(submission_id)

    def submit_due(self, submission_id: str) -> bool:
        return self._backoff.due(submission_id)

    def forget_submission(self, submission_id: str) -> None:
        self._backoff.forget(submission_id)

    def status(self, submission_id: str) -> RayJobState | None:
        self._answer("status")
        job = self.jobs.get(submission_id)
        if job is None:
            return None
        return RayJobState(job.status, job.message, job.exit_code, start_time_ms=None, end_time_ms=None)

    def stop(self, submission_id: str) -> bool:
        self._answer("stop")
        job = self.jobs.get(submission_id)
        if job is None or job.status not in LIVE:
            return False
        job.status, job.message = "STOPPED", "Job was intentionally stopped."
        return True

    def logs(self, submission_id: str) -> str:
        self._answer("logs")
        job = self.jobs.get(submission_id)
        return "" if job is None else job.logs

    def cluster_resources(self, *, max_age_s: float = 30.0) -> ClusterResources:
        self._answer("cluster_resources")
        rows = [
            {"node_id": f"node-{i}", "ip": "127.0.0.1", "is_head": i == 0, "resources": dict(node)}
            for i, node in enumerate(self.nodes)
        ]
        total = {name: sum(node.get(name, 0.0) for node in self.nodes) for name in ("CPU", "GPU", "memory")}
        return ClusterResources(total=total, nodes=rows)

    # What the test drives.

    def run(self, submission_id: str) -> None:
        """Ray starts the job's entrypoint."""
        self.jobs[submission_id].status = "RUNNING"

    def end(
        self,
        submission_id: str,
        status: str,
        *,
        exit_code: int | None = None,
        message: str | None = None,
        logs: str = "",
    ) -> None:
        """The job ends: SUCCEEDED, FAILED or STOPPED, with its exit code, Ray's message and its log."""
        job = self.jobs[submission_id]
        job.status, job.exit_code, job.message, job.logs = status, exit_code, message, logs

    def lose(self, submission_id: str) -> None:
        """Ray forgets the job (its head restarted): ``status`` answers None from now on."""
        del self.jobs[submission_id]

    def submissions(self, job_id: int) -> list[str]:
        """The submission ids of ``job_id``'s attempts Ray holds, oldest first."""
        return [submission_id for submission_id, job in self.jobs.items() if job.spec.job_id == job_id]

    def live(self) -> list[str]:
        """The submissions pending or running in Ray."""
        return [submission_id for submission_id, job in self.jobs.items() if job.status in LIVE]

    def _answer(self, method: str) -> None:
        if self.down:
            raise RayUnavailable("Ray at fake://ray: connection refused")
        if self.faults[method]:
            raise self.faults[method].pop(0)
