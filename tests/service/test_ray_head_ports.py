"""What a local Ray head listens on (issue 10, finding 8): the dashboard, where a job is any command, on
127.0.0.1 only; beyond loopback only the Ray processes that ``service.cluster.ray_head``'s docstring names
(Ray 2.60 binds its gRPC servers to all interfaces, whatever the flags), and of the autoscaler and the
dashboard only their Prometheus metrics ports."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from service.cluster import ray_head

# Beyond loopback: Ray's C++ servers, its Python agents on the node address, and worker processes.
BEYOND_LOOPBACK = (
    "gcs_server",
    "raylet",
    "dashboard/agent.py",
    "runtime_env/agent/main.py",
    "ray.util.client.server",
    "default_worker.py",
    "ray::",
)
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def listening() -> dict[int, list[tuple[str, int]]]:
    """Socket inode -> (hex address, port) of every listening TCP socket, from /proc/net/tcp and tcp6."""
    sockets: dict[int, list[tuple[str, int]]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A":  # LISTEN
                sockets.setdefault(int(fields[9]), []).append((address, int(port, 16)))
    return sockets


def session_listeners(session_id: int) -> list[tuple[str, int, str]]:
    """(hex address, port, command line) of each listening socket of the processes in ``session_id``."""
    sockets, found = listening(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getsid(int(pid)) != session_id:
                continue
            command = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            inodes = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except (OSError, ProcessLookupError):
            continue  # it ended meanwhile
        for inode in inodes:
            if inode.startswith("socket:["):
                found += [(address, port, command) for address, port in sockets.get(int(inode[8:-1]), [])]
    return found


@pytest.mark.ray
def test_the_dashboard_is_loopback_only_and_only_named_ray_processes_listen_beyond_it(ray_cluster: str) -> None:
    head = int((ray_head.head_dir(ray_cluster) / "head.pid").read_text())
    listeners = session_listeners(os.getsid(head))
    dashboard = urlsplit(ray_cluster).port
    assert {address for address, port, _ in listeners if port == dashboard} == {"0100007F"}
    environment = dict(entry.split("=", 1) for entry in Path(f"/proc/{head}/environ").read_text().split("\0") if entry)
    metrics_only = {
        "autoscaler/_private/monitor.py": int(environment["AUTOSCALER_METRIC_PORT"]),
        "dashboard/dashboard.py": int(environment["DASHBOARD_METRIC_PORT"]),
    }
    beyond = [(port, command) for address, port, command in listeners if address not in LOOPBACK]
    unnamed = [
        (port, command[:120])
        for port, command in beyond
        if not any(name in command for name in BEYOND_LOOPBACK)
        and not any(name in command and port == metrics for name, metrics in metrics_only.items())
    ]
    assert beyond and not unnamed, unnamed
