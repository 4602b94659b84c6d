"""Thin adapter over the Ray Jobs REST API: one Ray job per attempt, plus cluster resources and logs.

Each attempt runs as ``exec python -m workers.run --attempt ID`` with its spec in the job's runtime
env (``MMAE_ATTEMPT_SPEC``); a one-worker attempt trains in
that entrypoint, which asks for the worker's ``entrypoint_num_cpus`` and ``entrypoint_num_gpus``
(fractions allowed), while a multi-worker one's entrypoint only drives a Ray Train ``TorchTrainer``
whose ranks hold the resources, so it asks for none. Ray's job supervisor stops a job with SIGTERM and
waits ``RAY_JOB_STOP_WAIT_TIME_S`` before SIGKILL; that wait is set per submission (through the
job's runtime_env, which the supervisor inherits) to ``stop_grace_s`` so the trainer can
checkpoint, on any cluster. The calls go to the documented HTTP endpoints that Ray's
``JobSubmissionClient`` wraps (``/api/jobs/...``), over one kept-alive ``httpx.Client`` with a
timeout on every call (the SDK offers neither). Network failures and timeouts surface as
``RayUnavailable``; a request Ray refuses as ``RuntimeError``. A submission Ray could not take just
now (5xx, 429: ``RayBusy``) is transient: the client remembers each failed submission and says when it
is due again (exponential backoff, ``submit_due``), so the reconciler retries it without waiting.

The scheduler types against the ``RayClient`` protocol, not this adapter (``RayJobsClient``): the tests'
in-memory Ray (``tests/service/fake_ray.py``) implements the same protocol.
"""

from __future__ import annotations

import math
import shlex
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from service.cluster import ray_head
from service.settings import Settings
from workers.spec import SPEC_ENV, AttemptSpec

LOCAL_ADDRESS = "http://127.0.0.1:8265"
SUBMIT_BACKOFF_S = 1.0  # a transiently failed submission is tried again after 1, 2, 4, ... s
SUBMIT_BACKOFF_MAX_S = 60.0


class RayUnavailable(ConnectionError):
    """The Ray cluster cannot be reached (or a local head could not be started)."""


class RayBusy(RayUnavailable):
    """Ray answered, but could not take the request now (5xx, 429): worth trying again later."""


@dataclass(frozen=True)
class RayJobState:
    """What Ray knows about one submission."""

    status: str  # PENDING | RUNNING | STOPPED | SUCCEEDED | FAILED
    message: str | None
    exit_code: int | None
    start_time_ms: int | None
    end_time_ms: int | None


@dataclass(frozen=True)
class ClusterResources:
    """Totals of the alive nodes, and each node's own totals (a job must fit on one node)."""

    total: dict[str, float]
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def largest(self, resource: str) -> float:
        """The most of ``resource`` any single node has."""
        return max((node["resources"].get(resource, 0.0) for node in self.nodes), default=0.0)


class SubmitBackoff:
    """When each submission that failed transiently is due again: 1, 2, 4, ... s after its latest
    failure, at most ``SUBMIT_BACKOFF_MAX_S``."""

    def __init__(self) -> None:
        self._failures: dict[str, tuple[int, float]] = {}  # submission id -> (failures, due again at)

    def failed(self, submission_id: str) -> None:
        """One more transient failure: the wait before the next try doubles."""
        failures = self._failures.get(submission_id, (0, 0.0))[0] + 1
        delay = min(SUBMIT_BACKOFF_MAX_S, SUBMIT_BACKOFF_S * 2 ** (failures - 1))
        self._failures[submission_id] = (failures, time.monotonic() + delay)

    def due(self, submission_id: str) -> bool:
        """False while ``submission_id`` waits out its backoff."""
        failures = self._failures.get(submission_id)
        return failures is None or time.monotonic() >= failures[1]

    def forget(self, submission_id: str) -> None:
        """Drop the record of a submission that went through or will not be tried again."""
        self._failures.pop(submission_id, None)


class RayClient(Protocol):
    """What the service asks of Ray Jobs; ``RayJobsClient`` speaks it over HTTP.

    The points the scheduler relies on: ``submit`` raises ``RayBusy`` for a submission Ray could not take
    now (then ``submit_due`` is False until its backoff is over), ``RayUnavailable`` when Ray does not
    answer and ``RuntimeError`` when Ray refuses it (a submission id it already has, a bad request);
    ``status`` is None for a submission Ray has no record of; ``stop`` is idempotent (False once the job
    ended); every call but ``is_available`` may raise ``RayUnavailable``.
    """

    start_local: bool  # a local head may be started on demand (then nothing answering is no outage yet)

    @property
    def connected(self) -> bool:
        """True once ``connect`` succeeded."""
        ...

    def connect(self) -> None:
        """Reach the cluster (starting a local head when that is allowed)."""
        ...

    def is_available(self) -> bool:
        """True when Ray answered lately; never raises."""
        ...

    def submit(self, submission_id: str, spec: AttemptSpec) -> None:
        """Start attempt ``spec`` as Ray job ``submission_id``."""
        ...

    def submit_due(self, submission_id: str) -> bool:
        """False while a submission that failed transiently waits out its backoff."""
        ...

    def forget_submission(self, submission_id: str) -> None:
        """Drop the backoff record of a submission that will not be tried again."""
        ...

    def status(self, submission_id: str) -> RayJobState | None:
        """Ray's view of a submission, or None when Ray has no record of it."""
        ...

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop a job; False when it had already ended (or was never there)."""
        ...

    def logs(self, submission_id: str) -> str:
        """A submission's driver output so far ("" when Ray has no record of it)."""
        ...

    def cluster_resources(self, *, max_age_s: float = 30.0) -> ClusterResources:
        """Totals of the alive nodes and each node's totals, from a copy at most ``max_age_s`` old."""
        ...


class RayJobsClient:
    """Submit, stop, inspect Ray jobs at one dashboard address; start a local head when allowed.

    Cluster resources are cached: ``cluster_resources`` answers from a copy at most ``max_age_s`` old
    (the scheduler's reconcile pass refreshes it), and ``is_available`` remembers its probe for
    ``probe_ttl_s``.
    """

    def __init__(
        self,
        address: str,
        *,
        start_local: bool,
        stop_grace_s: float,
        python: str | None = None,
        timeout_s: float = 10.0,
        probe_ttl_s: float = 2.0,
    ) -> None:
        self.address = address.rstrip("/")
        self.start_local = start_local and ray_head.is_local(self.address)
        self.stop_grace_s, self.timeout_s, self.probe_ttl_s = stop_grace_s, timeout_s, probe_ttl_s
        self.python = python or sys.executable
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()
        self._resources: tuple[float, ClusterResources] | None = None
        self._probe: tuple[float, bool] | None = None
        self._backoff = SubmitBackoff()

    @classmethod
    def from_settings(cls, settings: Settings) -> RayJobsClient:
        """Client for ``settings.ray_address``; None: a local head at 127.0.0.1:8265, started on demand."""
        return cls(
            settings.ray_address or LOCAL_ADDRESS,
            start_local=settings.ray_address is None,
            stop_grace_s=settings.stop_grace_s,
            python=settings.worker_python,
            timeout_s=settings.ray_timeout_s,
        )

    def connect(self) -> None:
        """Reach the cluster, starting the local head first if it is ours to start and not running."""
        with self._lock:
            if self._http is not None:
                return
            if not ray_head.is_up(self.address):
                if not self.start_local:
                    raise RayUnavailable(f"no Ray dashboard answers at {self.address}")
                try:
                    ray_head.start_head(self.address)
                except RuntimeError as error:
                    raise RayUnavailable(str(error)) from error
            self._http = httpx.Client(base_url=self.address, headers=ray_head.auth_headers(), timeout=self.timeout_s)

    @property
    def connected(self) -> bool:
        """True once ``connect`` succeeded."""
        return self._http is not None

    def is_available(self) -> bool:
        """True when the dashboard answered lately (a cheap probe for health checks; starts nothing)."""
        now = time.monotonic()
        if self._probe is None or now - self._probe[0] > self.probe_ttl_s:
            self._probe = (now, ray_head.is_up(self.address))
        return self._probe[1]

    def submit(self, submission_id: str, spec: AttemptSpec) -> None:
        """Start attempt ``spec`` as Ray job ``submission_id``, reserving one worker's CPUs and GPUs for the
        entrypoint when it trains itself (``spec.scaling.workers == 1``) and nothing when it only
        coordinates Ray Train workers.

        The spec travels with the job (the ``SPEC_ENV`` variable of its runtime env), so no node needs a
        file from the service. Ray runs an entrypoint through a shell; ``exec`` replaces the shell with
        the trainer, so the process Ray watches, signals and reports on is the trainer itself, never a
        wrapper whose death would orphan it.
        """
        trains_itself = spec.scaling.workers == 1
        command = [self.python, "-m", "workers.run", "--attempt", str(spec.attempt_id)]
        body = {
            "entrypoint": "exec " + shlex.join(command),
            "submission_id": submission_id,
            "entrypoint_num_cpus": spec.scaling.num_cpus if trains_itself else 0,
            "entrypoint_num_gpus": spec.scaling.num_gpus if trains_itself else 0,
            "runtime_env": {
                "env_vars": {
                    "RAY_JOB_STOP_WAIT_TIME_S": str(math.ceil(self.stop_grace_s)),
                    SPEC_ENV: spec.model_dump_json(),
                }
            },
        }
        try:
            _checked(self._request("POST", "/api/jobs/", json=body))
        except RayUnavailable:
            self._backoff.failed(submission_id)
            raise
        self._backoff.forget(submission_id)

    def submit_due(self, submission_id: str) -> bool:
        """False while a submission that failed transiently waits out its backoff."""
        return self._backoff.due(submission_id)

    def forget_submission(self, submission_id: str) -> None:
        """Drop the backoff record of a submission that will not be tried again."""
        self._backoff.forget(submission_id)

    def status(self, submission_id: str) -> RayJobState | None:
        """Ray's view of a submission, or None when Ray has no record of it."""
        response = self._request("GET", f"/api/jobs/{submission_id}")
        if response.status_code == 404:
            return None
        info = _checked(response)
        return RayJobState(
            status=info["status"],
            message=info.get("message"),
            exit_code=info.get("driver_exit_code"),
            start_time_ms=info.get("start_time"),
            end_time_ms=info.get("end_time"),
        )

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop a job (SIGTERM, SIGKILL after the stop wait); False when it had already ended."""
        response = self._request("POST", f"/api/jobs/{submission_id}/stop")
        return response.status_code != 404 and bool(_checked(response)["stopped"])

    def logs(self, submission_id: str) -> str:
        """A submission's driver output so far ("" when Ray has no record of it)."""
        response = self._request("GET", f"/api/jobs/{submission_id}/logs")
        return "" if response.status_code == 404 else _checked(response)["logs"]

    def cluster_resources(self, *, max_age_s: float = 30.0) -> ClusterResources:
        """Totals of the alive nodes (``{"CPU": 4.0, "GPU": 1.0, ...}``) and each node's totals, from a
        copy at most ``max_age_s`` old (0: ask Ray now)."""
        cached = self._resources
        if cached is not None and time.monotonic() - cached[0] <= max_age_s:
            return cached[1]
        fetched_at = time.monotonic()
        response = self._request("GET", "/api/v0/nodes", params={"detail": "1"})
        rows = _checked(response)["data"]["result"]["result"]
        nodes = [
            {
                "node_id": row["node_id"],
                "ip": row["node_ip"],
                "is_head": row["is_head_node"],
                "resources": row["resources_total"],
            }
            for row in rows
            if row["state"] == "ALIVE"
        ]
        total: dict[str, float] = {}
        for node in nodes:
            for name in ("CPU", "GPU", "memory"):
                total[name] = total.get(name, 0.0) + node["resources"].get(name, 0.0)
        self._resources = (fetched_at, ClusterResources(total=total, nodes=nodes))
        return self._resources[1]

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        self.connect()
        try:
            return self._http.request(method, path, **kwargs)
        except httpx.HTTPError as error:  # connection failures and timeouts
            raise RayUnavailable(f"Ray at {self.address}: {error!r}") from error


def _checked(response: httpx.Response) -> Any:
    """The JSON body of a successful response; ``RayBusy`` for a 5xx or 429 (transient), ``RuntimeError``
    with Ray's reason for any other refusal (permanent)."""
    if response.status_code == 200:
        return response.json()
    reason = f"Ray answered {response.status_code}: {response.text[:2000]}"
    if response.status_code >= 500 or response.status_code == 429:
        raise RayBusy(reason)
    raise RuntimeError(reason)
