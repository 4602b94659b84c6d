"""A local Ray head for one machine: started detached, found again by its address, stopped by pid.

The head runs as ``ray start --head --block`` in its own session, so it (and the training jobs it
runs) outlives the API process; an API restart finds it again by probing the dashboard address.
Every port but the dashboard's is picked free at start, and its temp dir is
``$TMPDIR/ray-mmae-<dashboard port>``, so several heads (a test session, a dev server) coexist.
Token auth is on: the head and every client use the token from ``RAY_AUTH_TOKEN``,
``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token`` (Ray's order); one is generated when none exists.

What listens where: the dashboard (the Jobs API, where a job is any command) binds 127.0.0.1 only.
Ray 2.60 cannot keep the rest on loopback: its gRPC servers (GCS, raylet node and object managers,
every worker process) bind all interfaces whatever the flags, and ``--node-ip-address=127.0.0.1`` is
replaced by the machine's routable address (``ray._private.services.resolve_ip_for_localhost``), on
which the dashboard agent, the runtime-env agent and the Ray client server then listen. Those ports
refuse requests without the cluster's token. The autoscaler's and the dashboard's Prometheus endpoints
(read-only metrics, no token; free ports per head, not Ray's fixed 44217/44227) listen there too. On a
shared or exposed machine, firewall them (or run the API in a network namespace of its own).
``tests/service/test_ray_head_ports.py`` checks that the dashboard is loopback-only and that only those
processes and ports listen beyond loopback.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx

import workers

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
SOURCE_ROOT = Path(workers.__file__).resolve().parents[1]  # cwd of the head: `python -m workers.run` imports


def auth_token() -> str | None:
    """The Ray auth token this process would present, in Ray's order of precedence, or None."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip()
    path = _token_path()
    return path.read_text().strip() if path.is_file() else None


def ensure_auth_token() -> str:
    """Return the auth token, writing a new one (mode 0600) where Ray looks for it when there is none."""
    token = auth_token()
    if token:
        return token
    path = _token_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token)
    return token


def _token_path() -> Path:
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")


def auth_headers() -> dict[str, str]:
    """HTTP headers for the dashboard and Jobs API (empty when no token exists)."""
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def is_up(address: str, timeout_s: float = 2.0) -> bool:
    """True when a Ray dashboard answers ``/api/version`` at ``address`` with our token."""
    try:
        response = httpx.get(f"{address}/api/version", headers=auth_headers(), timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


def has_node(address: str, timeout_s: float = 5.0) -> bool:
    """True once at least one alive node has registered with the head at ``address``."""
    try:
        response = httpx.get(f"{address}/api/v0/nodes", headers=auth_headers(), timeout=timeout_s)
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and response.json()["data"]["result"]["total"] > 0


def is_local(address: str) -> bool:
    """True for an http address on this machine (where we may start a head)."""
    return urlsplit(address).hostname in ("127.0.0.1", "localhost")


def head_dir(address: str) -> Path:
    """Temp dir of the local head serving ``address`` (short: Ray's socket paths have a length limit)."""
    return Path(tempfile.gettempdir()) / f"ray-mmae-{urlsplit(address).port}"


def gcs_address(address: str) -> str:
    """``host:port`` of the GCS of the local head serving ``address``: what ``ray start --address``
    joins a node to (Ray's own ``ray_current_cluster`` file is removed by any ``ray stop`` on the machine)."""
    return (head_dir(address) / "gcs.address").read_text().strip()


def local_cpus() -> int:
    """CPUs this process may use: its affinity, capped by a cgroup (v2) CPU quota (a container's limit).
    A local head offers exactly these, so ``service.scheduling.allocation`` can size jobs before it is started."""
    cpus = len(os.sched_getaffinity(0))
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()
    except (OSError, ValueError):
        return cpus
    return cpus if quota == "max" else max(1, min(cpus, int(quota) // int(period)))


def start_head(
    address: str, *, num_cpus: float | None = None, num_gpus: float | None = None, timeout_s: float = 90.0
) -> int:
    """Start a detached local head whose dashboard serves ``address``; returns its pid once its node is up.
    It offers ``num_cpus`` CPUs (default ``local_cpus()``)."""
    parts = urlsplit(address)
    folder = head_dir(address)
    folder.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": ensure_auth_token(),
        # Prometheus endpoints of the autoscaler and dashboard: Ray's fixed defaults collide between heads
        "AUTOSCALER_METRIC_PORT": str(_free_port()),
        "DASHBOARD_METRIC_PORT": str(_free_port()),
    }
    gcs_port = _free_port()
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        f"--port={gcs_port}",
        f"--ray-client-server-port={_free_port()}",
        f"--dashboard-agent-listen-port={_free_port()}",
        f"--dashboard-host={parts.hostname}",
        "--node-ip-address=127.0.0.1",  # Ray advertises the routable address anyway: see the module docstring
        f"--dashboard-port={parts.port}",
        "--include-dashboard=true",
        f"--temp-dir={folder}",
    ]
    command += [f"--num-cpus={num_cpus if num_cpus is not None else local_cpus():g}"]
    command += [f"--num-gpus={num_gpus:g}"] if num_gpus is not None else []
    with open(folder / "head.log", "ab") as log:
        process = subprocess.Popen(
            command, cwd=SOURCE_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    (folder / "head.pid").write_text(str(process.pid))
    (folder / "gcs.address").write_text(f"127.0.0.1:{gcs_port}")
    deadline = time.monotonic() + timeout_s
    while not (is_up(address) and has_node(address)):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            tail = (folder / "head.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"local Ray head at {address} did not start:\n{tail}")
        time.sleep(0.5)
    return process.pid


def stop_head(address: str, timeout_s: float = 60.0) -> bool:
    """Stop the head ``start_head`` started for ``address``: its live jobs first (a job's process would
    outlive the head), then the head (SIGTERM, then SIGKILL); True if stopped."""
    pid_file = head_dir(address) / "head.pid"
    if not pid_file.is_file():
        return False
    stop_jobs(address, timeout_s)
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def stop_jobs(address: str, timeout_s: float = 60.0) -> None:
    """Ask Ray to stop every job that has not ended (SIGTERM, SIGKILL after each job's stop wait) and wait up
    to ``timeout_s`` for them to end. Best effort: a head that does not answer is left as it is."""
    live = ("PENDING", "RUNNING")
    try:
        with httpx.Client(base_url=address, headers=auth_headers(), timeout=10.0) as client:
            jobs = [job["submission_id"] for job in client.get("/api/jobs/").json() if job["status"] in live]
            for submission_id in jobs:
                client.post(f"/api/jobs/{submission_id}/stop")
            deadline = time.monotonic() + timeout_s
            while jobs and time.monotonic() < deadline:
                time.sleep(0.2)
                jobs = [job for job in jobs if client.get(f"/api/jobs/{job}").json()["status"] in live]
    except (httpx.HTTPError, ValueError, KeyError):
        return


@contextmanager
def temporary_head(token_path: Path, *, num_cpus: float | None = None, num_gpus: float | None = None) -> Iterator[str]:
    """A head of its own (for a test session or a benchmark) on a free dashboard port, with its auth token at
    ``token_path``; yields its address, then stops it, removes its temp dir and restores ``RAY_AUTH_TOKEN_PATH``."""
    previous = os.environ.get("RAY_AUTH_TOKEN_PATH")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    address = f"http://127.0.0.1:{_free_port()}"
    start_head(address, num_cpus=num_cpus, num_gpus=num_gpus)
    try:
        yield address
    finally:
        stop_head(address)
        shutil.rmtree(head_dir(address), ignore_errors=True)
        if previous is None:
            os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        else:
            os.environ["RAY_AUTH_TOKEN_PATH"] = previous


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our own child
    except ChildProcessError:
        return True
    return waited == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
