"""Thin adapter over the Ray Jobs API: one Ray job per attempt, plus cluster resources and logs.

Each attempt runs as ``python -m workers.run --spec PATH`` with the job's ``entrypoint_num_cpus``
and ``entrypoint_num_gpus`` (fractions allowed). Ray's job supervisor stops a job with SIGTERM and
waits ``RAY_JOB_STOP_WAIT_TIME_S`` before SIGKILL; that wait is set per submission (through the
job's runtime_env, which the supervisor inherits) to ``stop_grace_s`` so the trainer can
checkpoint, on any cluster. Network failures surface as ``RayUnavailable``.
"""

from __future__ import annotations

import math
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from service import ray_head
from service.settings import Settings

LOCAL_ADDRESS = "http://127.0.0.1:8265"


class RayUnavailable(ConnectionError):
    """The Ray cluster cannot be reached (or a local head could not be started)."""


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


class RayClient:
    """Submit, stop, inspect Ray jobs at one dashboard address; start a local head when allowed."""

    def __init__(
        self, address: str, *, start_local: bool, stop_grace_s: float, python: str | None = None
    ) -> None:
        self.address = address.rstrip("/")
        self.start_local = start_local and ray_head.is_local(self.address)
        self.stop_grace_s = stop_grace_s
        self.python = python or sys.executable
        self._jobs = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RayClient:
        """Client for ``settings.ray_address``; None: a local head at 127.0.0.1:8265, started on demand."""
        return cls(
            settings.ray_address or LOCAL_ADDRESS,
            start_local=settings.ray_address is None,
            stop_grace_s=settings.stop_grace_s,
            python=settings.worker_python,
        )

    def connect(self) -> None:
        """Reach the cluster, starting the local head first if it is ours to start and not running."""
        with self._lock:
            if self._jobs is not None:
                return
            if not ray_head.is_up(self.address):
                if not self.start_local:
                    raise RayUnavailable(f"no Ray dashboard answers at {self.address}")
                try:
                    ray_head.start_head(self.address)
                except RuntimeError as error:
                    raise RayUnavailable(str(error)) from error
            from ray.job_submission import JobSubmissionClient

            try:
                self._jobs = JobSubmissionClient(self.address, headers=ray_head.auth_headers())
            except (OSError, RuntimeError) as error:  # requests' errors are OSErrors
                raise RayUnavailable(f"Ray at {self.address}: {error}") from error

    @property
    def connected(self) -> bool:
        """True once ``connect`` succeeded."""
        return self._jobs is not None

    def is_available(self) -> bool:
        """True when the dashboard answers now (a cheap probe for health checks; starts nothing)."""
        return ray_head.is_up(self.address)

    def submit(self, submission_id: str, spec_path: Path, *, num_cpus: float, num_gpus: float) -> None:
        """Start ``python -m workers.run --spec spec_path`` as Ray job ``submission_id``."""
        wait_s = str(math.ceil(self.stop_grace_s))
        self._call(
            "submit_job",
            entrypoint=f"{self.python} -m workers.run --spec {spec_path}",
            submission_id=submission_id,
            entrypoint_num_cpus=num_cpus,
            entrypoint_num_gpus=num_gpus,
            runtime_env={"env_vars": {"RAY_JOB_STOP_WAIT_TIME_S": wait_s}},
        )

    def status(self, submission_id: str) -> RayJobState | None:
        """Ray's view of a submission, or None when Ray has no record of it."""
        try:
            info = self._call("get_job_info", submission_id)
        except RuntimeError as error:
            if "status code 404" in str(error):
                return None
            raise
        return RayJobState(
            status=str(info.status.value),
            message=info.message,
            exit_code=info.driver_exit_code,
            start_time_ms=info.start_time,
            end_time_ms=info.end_time,
        )

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop a job (SIGTERM, SIGKILL after the stop wait); False when it had already ended."""
        return bool(self._call("stop_job", submission_id))

    def logs(self, submission_id: str) -> str:
        """A submission's driver output so far ("" when Ray has no record of it)."""
        try:
            return self._call("get_job_logs", submission_id)
        except RuntimeError as error:
            if "status code 404" in str(error):
                return ""
            raise

    def cluster_resources(self) -> ClusterResources:
        """Totals of the alive nodes (``{"CPU": 4.0, "GPU": 1.0, ...}``) and each node's totals."""
        self.connect()
        try:
            response = httpx.get(
                f"{self.address}/api/v0/nodes", params={"detail": "1"}, headers=ray_head.auth_headers(),
                timeout=10.0,
            )
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise RayUnavailable(f"Ray at {self.address}: {error}") from error
        rows = response.json()["data"]["result"]["result"]
        nodes = [
            {"node_id": row["node_id"], "ip": row["node_ip"], "is_head": row["is_head_node"],
             "resources": row["resources_total"]}
            for row in rows if row["state"] == "ALIVE"
        ]
        total: dict[str, float] = {}
        for node in nodes:
            for name in ("CPU", "GPU", "memory"):
                total[name] = total.get(name, 0.0) + node["resources"].get(name, 0.0)
        return ClusterResources(total=total, nodes=nodes)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.connect()
        try:
            return getattr(self._jobs, method)(*args, **kwargs)
        except OSError as error:  # requests' connection errors are OSErrors
            raise RayUnavailable(f"Ray at {self.address}: {error}") from error
