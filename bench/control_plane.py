"""Control-plane figures against real parts: a uvicorn API process on PostgreSQL and a local Ray head.

1. submit -> running: POST /api/jobs until the API reports ``running``, against the same entrypoint
   (``python -m workers.run``) submitted to the Ray Jobs API directly until Ray reports RUNNING.
   Rounds alternate ours/raw; each job is stopped and drained before the next. Target <= 1.05x.
2. Time to accept a 100-cell grid sweep (POST /api/sweeps, client-side wall time). Target <= 1 s.
3. API read latency (``--workers`` API processes) with 10,000 jobs in the database (the web list's
   queries, job views, metric reads), 50 concurrent clients (httpx async): closed loop (each client
   sends its next request as soon as the last returns) and paced (each client one request per second,
   like 50 open pages).
   Target p99 <= 50 ms.
4. Metric ingest into PostgreSQL through the workers' reporter (``workers.reporter.Reporter``,
   batched upserts), points per second. Target >= 50k points/s.
5. One admission pass (``service.scheduling.scheduler.admit_queued``) with 10,000 jobs queued behind a full
   cluster (the steady state a big sweep leaves), median of repeated passes: it must stay flat in the
   queue length (before the fix every pass loaded every queued job as an ORM row). ``--admission-only``
   runs just this one, without Ray or an API process.

Needs PostgreSQL (``MMAE_BENCH_PG_URL``, default postgresql+psycopg://postgres@127.0.0.1:5432/test;
a scratch database is created and dropped). Run: ``python bench/control_plane.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, insert, make_url, text

from mmae.callbacks import RunInfo
from mmae.config import TrainConfig, config_hash
from service.auth import ADMIN_TOKEN_FILE
from service.cluster import ray_head
from service.cluster.ray_client import ClusterResources
from service.scheduling.context import SchedulerContext
from service.scheduling.scheduler import admit_queued
from service.settings import Settings
from service.store.db import make_engine, make_session_factory
from service.store.migrations import upgrade_to_head
from service.store.models import Attempt, AttemptProgress, Job, MetricPoint
from service.store.run_params import key_params
from service.store.states import TERMINAL
from service.tracking.tracker import Tracker
from workers.reporter import Reporter, connect
from workers.spec import SPEC_ENV

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get("MMAE_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# A job that would train for a long time: it is stopped as soon as it runs.
LONG_JOB = {"method": "mmae", "steps": 100_000, "device": "cpu", "model": {"depth": 1, "decoder_depth": 1}}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"mmae_bench_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def api_process(
    database_url: str, ray_address: str, data_dir: Path, intervals: tuple[float, float], workers: int = 1
) -> Iterator[tuple[httpx.Client, int]]:
    """``mmae serve [--workers N]`` in a subprocess; yields an authenticated client and the server's pid (with
    workers, the pid of their parent)."""
    port = free_port()
    env = {
        **os.environ,
        "MMAE_DATA_DIR": str(data_dir),
        "MMAE_DATABASE_URL": database_url,
        "MMAE_RAY_ADDRESS": ray_address,
        "MLFLOW_TRACKING_URI": f"sqlite:///{data_dir / 'mlflow.db'}",
        "MMAE_SCHEDULER_INTERVAL_S": str(intervals[0]),
        "MMAE_RECONCILE_INTERVAL_S": str(intervals[1]),
    }
    log = open(data_dir.parent / "api.log", "ab")  # noqa: SIM115 - lives as long as the process
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(base), 90, "the API did not start")
        token = (data_dir / ADMIN_TOKEN_FILE).read_text().strip()
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            yield client, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/health", timeout=2).json()["ray"] == "ok"
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def wait_for(predicate: Any, timeout_s: float, message: str, poll_s: float = 0.01) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(message)
        time.sleep(poll_s)


def ours_once(client: httpx.Client) -> float:
    """Seconds from POST /api/jobs to the API reporting ``running``; the job is then cancelled and drained."""
    started = time.perf_counter()
    job_id = client.post("/api/jobs", json={"config": LONG_JOB}).json()["id"]
    wait_for(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] == "running", 120, "job never ran")
    elapsed = time.perf_counter() - started
    client.post(f"/api/jobs/{job_id}/cancel")
    wait_for(lambda: client.get(f"/api/jobs/{job_id}").json()["status"] in TERMINAL, 60, "no stop", 0.2)
    return elapsed


def raw_once(jobs: Any, template: Any) -> float:
    """Seconds from submit_job to Ray reporting RUNNING for the entrypoint and runtime env of one of our
    attempts (``template``, Ray's record of it); then stopped and drained."""
    started = time.perf_counter()
    submission = jobs.submit_job(
        entrypoint=template.entrypoint,
        entrypoint_num_cpus=1,
        entrypoint_num_gpus=0,
        runtime_env=template.runtime_env,
    )
    wait_for(lambda: str(jobs.get_job_status(submission).value) != "PENDING", 120, "raw job never ran")
    elapsed = time.perf_counter() - started
    jobs.stop_job(submission)
    wait_for(
        lambda: str(jobs.get_job_status(submission).value) in ("STOPPED", "SUCCEEDED", "FAILED"),
        60,
        "raw job did not stop",
        0.2,
    )
    return elapsed


def submit_latency(client: httpx.Client, ray_address: str, rounds: int) -> tuple[float, float]:
    """Median seconds to running: (ours, raw Ray), interleaved round by round after one warm-up each."""
    from ray.job_submission import JobSubmissionClient

    jobs = JobSubmissionClient(ray_address, headers=ray_head.auth_headers())
    ours_once(client)  # warm-up: creates the MLflow experiment and store
    template = next(job for job in jobs.list_jobs() if SPEC_ENV in (job.runtime_env or {}).get("env_vars", {}))
    raw_once(jobs, template)
    ours, raw = [], []
    for round_ in range(rounds):
        pair = [
            lambda: ours.append(ours_once(client)),
            lambda: raw.append(raw_once(jobs, template)),
        ]
        for measure in pair if round_ % 2 == 0 else pair[::-1]:
            measure()
    return statistics.median(ours), statistics.median(raw)


def seed_jobs(database_url: str, count: int) -> int:
    """Insert ``count`` finished jobs (progress, erank points); returns one with 20 x 1000 points."""
    config = TrainConfig.model_validate({"steps": 300})
    digest, dumped = config_hash(config), config.model_dump(mode="json")
    params = {method: key_params(method, dumped, None) for method in ("mmae", "mae", "simclr", "byol")}
    rng, now = random.Random(0), datetime.now(UTC)
    methods = ("mmae", "mae", "simclr", "byol")
    jobs = [
        {
            "name": f"seed-{i}",
            "status": rng.choice(sorted(TERMINAL)),
            "method": (method := rng.choice(methods)),
            "config": dumped,
            "params": params[method],
            "config_hash": digest,
            "priority": rng.randint(0, 5),
            "max_retries": 2,
            "retries_used": 0,
            "num_cpus": 1.0,
            "num_gpus": 0.0,
            "tags": [rng.choice(["a", "b", "c"])],
            "created_at": now - timedelta(seconds=count - i),
            "queued_at": now,
            "summary": {"eval/linear_top1": (linear := rng.random())},
            "linear_top1": linear,
        }
        for i in range(count)
    ]
    engine = create_engine(database_url)
    with engine.begin() as connection:
        ids = list(connection.scalars(insert(Job).returning(Job.id), jobs))
        connection.execute(
            insert(AttemptProgress),
            [
                {
                    "attempt_id": job_id,
                    "job_id": job_id,
                    "step": 300,
                    "total_steps": 300,
                    "phase": "done",
                    "run_info": {"feature_dim": 192},
                    "heartbeat_at": now,
                }
                for job_id in ids
            ],
        )
        connection.execute(
            insert(MetricPoint),
            [
                {
                    "job_id": job_id,
                    "name": "info/erank",
                    "step": step,
                    "value": 50.0,
                    "attempt_id": job_id,
                    "logged_at": now,
                }
                for job_id in ids
                for step in range(0, 300, 30)
            ],
        )
        big = ids[0]
        connection.execute(
            insert(MetricPoint),
            [
                {
                    "job_id": big,
                    "name": f"train/m{k}",
                    "step": step,
                    "value": rng.random(),
                    "attempt_id": big,
                    "logged_at": now,
                }
                for k in range(20)
                for step in range(1000)
            ],
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))  # what autovacuum does soon after a bulk load
    engine.dispose()
    return big


def sweep_accept(client: httpx.Client, repeats: int = 3) -> float:
    """Median seconds for POST /api/sweeps of a 100-cell grid to answer; the cells are cancelled after."""
    timings = []
    for repeat in range(repeats):
        body = {
            "name": f"accept-{repeat}",
            "base_config": LONG_JOB,
            "max_concurrency": 1,
            "priority": -1000,
            "parameters": {"loss.mu": {"values": [round(0.05 * (i + 1), 3) for i in range(100)]}},
        }
        started = time.perf_counter()
        response = client.post("/api/sweeps", json=body)
        timings.append(time.perf_counter() - started)
        assert response.status_code == 201 and response.json()["total"] == 100, response.text
        cells = client.get("/api/jobs", params={"sweep_id": response.json()["id"], "limit": 500}).json()["items"]
        for cell in cells:
            client.post(f"/api/jobs/{cell['id']}/cancel")
    return statistics.median(timings)


def read_requests(big: int, job_ids: list[int], rng: random.Random) -> str:
    """One request of the read mix: mostly the web list (several sorts, filters, deep pages) and job views."""
    choice = rng.random()
    if choice < 0.5:
        sort = rng.choice(["-created_at", "-linear_top1", "name", "-priority"])
        status = rng.choice(["", "&status=succeeded", "&status=failed&tag=a"])
        return f"/api/jobs?limit=50&offset={rng.randrange(0, 5000, 50)}&sort={sort}{status}"
    if choice < 0.9:
        return f"/api/jobs/{rng.choice(job_ids)}"
    return f"/api/jobs/{big}/metrics?max_points=500&names=train/m1,train/m2,train/m3"


async def read_latency(
    base_url: str, headers: dict[str, str], big: int, clients: int, seconds: float, pace_s: float
) -> tuple[list[float], float]:
    """Latencies (s) of ``clients`` concurrent clients for ``seconds``; ``pace_s`` between a client's requests
    (0: closed loop). Returns (latencies, requests per second)."""
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits, timeout=30) as client:
        job_ids = [item["id"] for item in (await client.get("/api/jobs?limit=500")).json()["items"]]
        deadline = time.monotonic() + seconds

        async def one_client(seed: int) -> None:
            rng = random.Random(seed)
            await asyncio.sleep(rng.random() * max(pace_s, 0.01))
            while time.monotonic() < deadline:
                started = time.perf_counter()
                response = await client.get(read_requests(big, job_ids, rng))
                latencies.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
                if pace_s:
                    await asyncio.sleep(max(0.0, pace_s - (time.perf_counter() - started)))

        await asyncio.gather(*(one_client(seed) for seed in range(clients)))
    return latencies, len(latencies) / seconds


def cpu_s(pid: int) -> float:
    """User + system CPU seconds so far of a process and its live children (Linux /proc); 0 when it is gone."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rsplit(")", 1)[1].split()  # fields[1]: the parent's pid
            if stat.parent.name == str(pid) or fields[1] == str(pid):
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_cpu_s(pid: int, database: str) -> float:
    """CPU seconds used so far by the API process (and its workers) and the PostgreSQL backends of ``database``."""
    backends = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            if database.encode() in cmdline.read_bytes():
                backends.append(int(cmdline.parent.name))
    return cpu_s(pid) + sum(cpu_s(backend) for backend in backends)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def running_attempt(engine: Any) -> tuple[int, int]:
    """A running job with a running attempt, as the scheduler leaves one: (job id, attempt id)."""
    config = TrainConfig.model_validate({"steps": 300})
    with make_session_factory(engine)() as session:
        job = Job(
            name="ingest",
            method="mmae",
            config=config.model_dump(mode="json"),
            config_hash=config_hash(config),
            status="running",
        )
        attempt = Attempt(job=job, number=1, status="running", ray_submission_id=f"ingest-{uuid.uuid4().hex}")
        session.add_all([job, attempt])
        session.commit()
        return job.id, attempt.id


def ingest_rate(database_url: str, points: int, names: int = 20) -> float:
    """Points per second through ``Reporter`` as workers configure it (its default batching: one upsert
    per ``flush_points`` points or ``flush_interval_s``)."""
    engine = connect(database_url)
    upgrade_to_head(engine)
    job_id, attempt_id = running_attempt(engine)  # the fence admits only the job's current attempt
    reporter = Reporter(engine, job_id=job_id, attempt_id=attempt_id)
    reporter.on_train_start(
        RunInfo(
            total_steps=points // names,
            start_step=0,
            feature_dim=192,
            num_parameters=1,
            device="cpu",
            precision="fp32",
        )
    )
    metrics_names = [f"train/m{k}" for k in range(names)]
    started = time.perf_counter()
    for step in range(points // names):
        reporter.on_metrics(step, {name: step * 0.001 + k for k, name in enumerate(metrics_names)})
    reporter.flush()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return points / elapsed


class FullCluster:
    """Ray as admission sees it: the cached cluster totals of one 4-CPU node (no call leaves the process)."""

    def cluster_resources(self, max_age_s: float = 30.0) -> ClusterResources:
        node = {"node_id": "bench", "ip": "127.0.0.1", "is_head": True, "resources": {"CPU": 4.0}}
        return ClusterResources(total={"CPU": 4.0, "GPU": 0.0}, nodes=[node])


def admission_pass(database_url: str, data_dir: Path, queued: int, repeats: int = 20) -> float:
    """Median seconds of one admission pass with ``queued`` jobs waiting behind 4 running 1-CPU jobs on
    a 4-CPU cluster (nothing fits: the pass only has to find that out)."""
    config = TrainConfig.model_validate({"steps": 300})
    row = {
        "method": "mmae",
        "config": config.model_dump(mode="json"),
        "config_hash": config_hash(config),
        "num_cpus": 1.0,
        "num_gpus": 0.0,
        "workers": 1,
    }
    now = datetime.now(UTC)
    engine = make_engine(database_url)
    upgrade_to_head(engine)
    with engine.begin() as connection:
        connection.execute(
            insert(Job),
            [
                row
                | {
                    "name": f"queued-{i}",
                    "status": "queued" if i >= 4 else "running",
                    "queued_at": now + timedelta(microseconds=i),
                }
                for i in range(queued + 4)
            ],
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        connection.execute(text("VACUUM ANALYZE"))  # what autovacuum does soon after a bulk load
    factory = make_session_factory(engine)
    settings = Settings(data_dir=data_dir, database_url=database_url)
    context = SchedulerContext(FullCluster(), settings, Tracker(settings))  # type: ignore[arg-type]
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        with factory() as session:
            assert admit_queued(session, context) == []
        times.append(time.perf_counter() - started)
    engine.dispose()
    return statistics.median(times)


def print_admission(data_dir: Path, queued: int) -> None:
    """Admission pass times with 10 and with ``queued`` jobs waiting, each in a scratch database."""
    figures = {}
    for count in (10, queued):
        with scratch_database() as url:
            figures[count] = admission_pass(url, data_dir, count)
    print(
        f"admission pass, full cluster, PostgreSQL: {figures[10] * 1000:.1f} ms with 10 queued, "
        f"{figures[queued] * 1000:.1f} ms with {queued:,} queued (target: flat)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10, help="submit->running rounds (ours and raw each)")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the database for the read test")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each read-latency run")
    parser.add_argument("--points", type=int, default=200_000, help="metric points for the ingest test")
    parser.add_argument("--workers", type=int, default=1, help="API processes (mmae serve --workers)")
    parser.add_argument("--queued", type=int, default=10_000, help="queued jobs for the admission pass")
    parser.add_argument("--admission-only", action="store_true", help="only the admission pass (no Ray, no API)")
    defaults = Settings.model_fields  # the shipped intervals: a new job wakes the loop, it is not polled for
    parser.add_argument("--scheduler-interval", type=float, default=defaults["scheduler_interval_s"].default)
    parser.add_argument("--reconcile-interval", type=float, default=defaults["reconcile_interval_s"].default)
    args = parser.parse_args()
    intervals = (args.scheduler_interval, args.reconcile_interval)
    if args.admission_only:
        with tempfile.TemporaryDirectory(prefix="mmae-bench-") as scratch:
            print_admission(Path(scratch) / "data", args.queued)
        return

    with (
        tempfile.TemporaryDirectory(prefix="mmae-bench-") as scratch,
        scratch_database() as url,
        ray_head.temporary_head(Path(scratch) / "ray_auth_token", num_cpus=4, num_gpus=0) as ray_address,
        api_process(url, ray_address, Path(scratch) / "data", intervals, args.workers) as (client, pid),
    ):
        ours, raw = submit_latency(client, ray_address, args.rounds)
        big = seed_jobs(url, args.jobs)
        accept = sweep_accept(client)
        headers = dict(client.headers)
        database = make_url(url).database or ""
        cpu_before, client_cpu_before = server_cpu_s(pid, database), time.process_time()
        closed, closed_rps = asyncio.run(
            read_latency(str(client.base_url), headers, big, args.clients, args.seconds, 0.0)
        )
        cpu_per_read = (server_cpu_s(pid, database) - cpu_before) / len(closed)
        client_cpu_per_read = (time.process_time() - client_cpu_before) / len(closed)
        paced, paced_rps = asyncio.run(
            read_latency(str(client.base_url), headers, big, args.clients, args.seconds, 1.0)
        )
    with scratch_database() as url:  # no scheduler here: it would fail the ingest's attempt, which Ray never ran
        ingest = ingest_rate(url, args.points)

    print(
        f"scheduler interval {intervals[0]} s, reconcile interval {intervals[1]} s, {args.workers} API process(es), "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"submit->running   ours {ours * 1000:7.0f} ms   raw Ray {raw * 1000:7.0f} ms   "
        f"ratio {ours / raw:.3f}  (target <= 1.05)"
    )
    print(f"100-cell sweep accepted in {accept * 1000:.0f} ms  (target <= 1000 ms)")
    for label, values, rps in (("closed loop", closed, closed_rps), ("paced 1/s  ", paced, paced_rps)):
        print(
            f"reads, {args.clients} clients, {label}: p50 {percentile(values, 50) * 1000:6.1f} ms   "
            f"p99 {percentile(values, 99) * 1000:6.1f} ms   {rps:6.0f} req/s  (target p99 <= 50 ms)"
        )
    print(
        f"CPU per read: server (API + its PostgreSQL backends) {cpu_per_read * 1000:.1f} ms, "
        f"this load generator {client_cpu_per_read * 1000:.1f} ms, on {os.cpu_count()} shared cores"
    )
    print(f"metric ingest into PostgreSQL via Reporter: {ingest:,.0f} points/s  (target >= 50,000)")
    with tempfile.TemporaryDirectory(prefix="mmae-bench-") as scratch:
        print_admission(Path(scratch) / "data", args.queued)


if __name__ == "__main__":
    main()
