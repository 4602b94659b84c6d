"""What the service costs a training run: the same config through ``mmae train`` and through the embedded
service (``mmae serve`` on SQLite with a local Ray head, fresh data dir, default resources), interleaved.

Prints, over ``--rounds`` rounds (a round: one standalone run, then one service job):
- wall time, service / standalone: submit until ``succeeded`` vs ``mmae train`` start to exit
  (target <= 1.05);
- median step time, service / standalone: the median of ``train/step_time_s`` (seconds per step over each
  logging window) of each run (target <= 1.02);
- submit -> first step: when step 1 ran, estimated from the first metric batch the worker wrote (its
  write time, less its last step's count of median steps);
- last step -> succeeded: from the write of the batch holding the last training step (evaluation
  included) until the API reports ``succeeded``;
- where the CPU went, per round: CPU seconds (``CpuMeter``) of the service job's worker process (its main
  and OpenMP threads, which build, train and evaluate, and its other threads: the reporter's SQL and
  MLflow threads, the lifeline), of the API process and of the Ray head's processes, against ``mmae
  train``'s (and what the idle API and Ray took meanwhile). CPU seconds, unlike wall time, barely change
  when other work shares the machine (torch's OpenMP threads spin-wait a little longer on a busy one);
and a 4-cell sweep (``loss.mu`` over 4 values, default resources and concurrency) against the same 4
configs back to back with ``mmae train`` (target <= 1.05).

Run: ``python bench/overhead.py [--rounds 3] [--steps 300] [--config examples/digits_mmae.yaml]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from control_plane import api_process, wait_for
from sqlalchemy import create_engine, select

from service.cluster import ray_head
from service.settings import Settings
from service.store.states import TERMINAL
from workers.tables import metric_points

ROOT = Path(__file__).resolve().parents[1]
MMAE = str(Path(sys.executable).with_name("mmae"))
STEP_TIME = "train/step_time_s"
SWEEP_MUS = [1.0, 2.0, 3.0, 4.0]
POLL_S = 1.0  # as often as `mmae submit --wait` asks
# the scheduler's and reconciler's shipped intervals: the reconciler notices a finished job within its interval
SHIPPED_INTERVALS = tuple(
    Settings.model_fields[name].default for name in ("scheduler_interval_s", "reconcile_interval_s")
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPU_SAMPLE_S = 1.0


def proc_stat(path: Path) -> tuple[int, int, float]:
    """(parent pid, session id, user + system CPU seconds) from a ``/proc/<pid>[/task/<tid>]/stat`` file."""
    text = path.read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return int(fields[1]), int(fields[3]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class CpuMeter:
    """CPU seconds of one run, by process and by thread, sampled from ``/proc`` every ``CPU_SAMPLE_S``
    on a thread of the bench: the API process (``api``); the local Ray head's processes (``ray``: they
    share the head's session, which ``start_head`` opens); the job's worker (``worker``: ``workers.run``,
    which Ray's job supervisor, a head process, starts in a session of its own); and ``train_pid`` (an
    ``mmae train``: ``train``). Use as a context manager; counts start at ``__enter__``. A process's
    CPU after its last sample (under ``CPU_SAMPLE_S``) is missed, as are processes that live shorter."""

    def __init__(self, api_pid: int, head_pid: int, train_pid: int | None = None) -> None:
        self.api_pid, self.head_pid, self.train_pid = api_pid, head_pid, train_pid
        self.base: dict[tuple[str, int, int], float] = {}  # (role, pid, tid: 0 for the whole process)
        self.last: dict[tuple[str, int, int], float] = {}
        self.exact: dict[str, float] = {}  # a role's total known exactly (rusage), replacing the samples'
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-meter", daemon=True)

    def __enter__(self) -> CpuMeter:
        self._sample()
        self.base = dict(self.last)  # what processes already running had spent before
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._done.wait(CPU_SAMPLE_S):
            self._sample()

    def _role(self, pid: int, ppid: int, session: int, sessions: dict[int, int]) -> str | None:
        if pid in (self.api_pid, self.train_pid):
            return "api" if pid == self.api_pid else "train"
        if session == self.head_pid:
            return "ray"
        if sessions.get(ppid) == self.head_pid and b"workers.run" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return "worker"
        return None

    def _sample(self) -> None:
        stats: dict[int, tuple[int, int, float]] = {}
        for entry in filter(str.isdigit, os.listdir("/proc")):
            try:
                stats[int(entry)] = proc_stat(Path("/proc", entry, "stat"))
            except (OSError, ValueError):  # it ended meanwhile
                continue
        sessions = {pid: session for pid, (_, session, _) in stats.items()}
        for pid, (ppid, session, cpu) in stats.items():
            try:
                role = self._role(pid, ppid, session, sessions)
                if role in ("worker", "train"):
                    for task in Path("/proc", str(pid), "task").iterdir():
                        self.last[(role, pid, int(task.name))] = proc_stat(task / "stat")[2]
            except OSError:
                continue
            if role is not None:
                self.last[(role, pid, 0)] = cpu

    def seconds(self, training_threads: int) -> dict[str, float]:
        """CPU seconds by role (``api``, ``ray``, ``worker``, ``train``), and ``<role> training`` for the
        worker and ``mmae train``: their main thread (data, model, training loop, evaluation, final
        artifacts) and the ``training_threads - 1`` busiest others, i.e. torch's intra-op (OpenMP) threads;
        the worker's Python threads (reporter, lifeline) each take far less (Python 3.11 does not name
        threads for the OS, so they are told apart by their CPU)."""
        spent = {key: cpu - self.base.get(key, 0.0) for key, cpu in self.last.items()}
        totals: dict[str, float] = {}
        for (role, pid, tid), cpu in spent.items():
            if tid == 0:
                totals[role] = totals.get(role, 0.0) + cpu
            elif tid == pid:  # the main thread, which runs the training loop
                others = sorted((c for (r, p, t), c in spent.items() if p == pid and t not in (0, pid)), reverse=True)
                key = f"{role} training"
                totals[key] = totals.get(key, 0.0) + cpu + sum(others[: training_threads - 1])
        return totals | self.exact


def standalone(
    config_file: Path, scratch: Path, overrides: list[str], watch: tuple[int, int] | None = None
) -> tuple[float, float, CpuMeter | None]:
    """``mmae train`` in a fresh run dir: (wall seconds, median step time, its ``CpuMeter`` when ``watch``
    gives the API's and Ray head's pids; the meter's ``train`` total is then rusage's exact figure)."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
    command = [MMAE, "train", str(config_file), "--run-dir", str(run_dir)]
    command += [f"--set={override}" for override in overrides]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meter = CpuMeter(*watch, train_pid=process.pid) if watch else None
    with meter or contextlib.nullcontext():
        _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise subprocess.CalledProcessError(os.waitstatus_to_exitcode(status), command)
    if meter is not None:
        meter.exact["train"] = usage.ru_utime + usage.ru_stime
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    step_times = [row["metrics"][STEP_TIME] for row in map(json.loads, lines) if STEP_TIME in row.get("metrics", {})]
    return wall, statistics.median(step_times), meter


def wait_until(client: httpx.Client, path: str, done: Any, timeout_s: float = 3600) -> dict[str, Any]:
    """Poll ``path`` every ``POLL_S`` until ``done(body)``; returns that body. End times come from the
    server's own ``finished_at``, so the poll can be as slow as a user's: an earlier version polled at
    20 Hz, and the API work that cost stole CPU from the training it was timing."""
    answer: dict[str, Any] = {}

    def finished() -> bool:
        answer.update(client.get(path).json())
        return done(answer)

    wait_for(finished, timeout_s, f"{path} did not finish", poll_s=POLL_S)
    return answer


def finished_at(body: dict[str, Any]) -> float:
    """A job's ``finished_at`` as a Unix time."""
    return datetime.fromisoformat(body["finished_at"]).timestamp()


def batches(database_url: str, job_id: int) -> list[tuple[datetime, int, int]]:
    """The worker's metric writes for a job, oldest first: (write time, last train step, points)."""
    query = select(metric_points.c.logged_at, metric_points.c.name, metric_points.c.step).where(
        metric_points.c.job_id == job_id
    )
    writes: dict[datetime, list[int]] = {}
    with create_engine(database_url).connect() as connection:
        for logged_at, name, step in connection.execute(query):
            writes.setdefault(logged_at, []).append(step if name.startswith("train/") else -1)
    return [(at, max(steps), len(steps)) for at, steps in sorted(writes.items())]


def job_figures(database_url: str, job_id: int, submitted: float, succeeded: float) -> dict[str, float]:
    """Wall, median step time, submit -> first step and last step -> succeeded of one service job."""
    with create_engine(database_url).connect() as connection:
        step_times = (
            connection.execute(
                select(metric_points.c.value).where(metric_points.c.job_id == job_id, metric_points.c.name == STEP_TIME)
            )
            .scalars()
            .all()
        )
    median = statistics.median(step_times)
    writes = [write for write in batches(database_url, job_id) if write[1] > 0]
    first_at, first_step, _ = writes[0]
    last_at = min(at for at, step, _ in writes if step == max(step for _, step, _ in writes))
    first_step_at = first_at.timestamp() - (first_step - 1) * median
    return {
        "wall": succeeded - submitted,
        "step": median,
        "to_first_step": first_step_at - submitted,
        "to_succeeded": succeeded - last_at.timestamp(),
    }


def service_job(
    client: httpx.Client, database_url: str, config: dict[str, Any], watch: tuple[int, int]
) -> dict[str, Any]:
    """One job through the API: ``job_figures``, its ``num_cpus`` and ``cpu`` (``CpuMeter.seconds``
    from submit to ``succeeded``; ``watch``: the API's and the Ray head's pids)."""
    with CpuMeter(*watch) as meter:
        submitted = time.time()
        job = client.post("/api/jobs", json={"config": config}).raise_for_status().json()
        status = wait_until(client, f"/api/jobs/{job['id']}", lambda body: body["status"] in TERMINAL)
    assert status["status"] == "succeeded", status.get("error")
    succeeded = finished_at(status)
    num_cpus = job["resources"]["num_cpus"]
    cpu = meter.seconds(training_threads=max(1, int(num_cpus)))
    return job_figures(database_url, job["id"], submitted, succeeded) | {"num_cpus": num_cpus, "cpu": cpu}


def service_sweep(client: httpx.Client, config: dict[str, Any]) -> float:
    """Wall seconds of a 4-cell ``loss.mu`` sweep with default resources and concurrency."""
    body = {
        "name": f"overhead-{time.time_ns()}",
        "base_config": config,
        "parameters": {"loss.mu": {"values": SWEEP_MUS}},
    }
    submitted = time.time()
    sweep = client.post("/api/sweeps", json=body).raise_for_status().json()
    path = f"/api/sweeps/{sweep['id']}"
    ended = wait_until(client, path, lambda body: sum(body["counts"].get(s, 0) for s in TERMINAL) == body["total"])
    assert ended["counts"].get("succeeded") == len(SWEEP_MUS), ended["counts"]
    cells = client.get("/api/jobs", params={"sweep_id": sweep["id"], "limit": len(SWEEP_MUS)}).json()["items"]
    return max(map(finished_at, cells)) - submitted


def ratio_line(label: str, service: list[float], alone: list[float], target: float, unit: str = "s") -> str:
    ours, theirs = statistics.median(service), statistics.median(alone)
    return (
        f"{label:<18} service {ours:8.3f} {unit}   mmae train {theirs:8.3f} {unit}   "
        f"ratio {ours / theirs:.3f}  (target <= {target})"
    )


def torch_threads() -> int:
    """The intra-op threads torch starts with here, which ``mmae train`` trains on."""
    probe = [sys.executable, "-c", "import torch; print(torch.get_num_threads())"]
    return int(subprocess.run(probe, check=True, capture_output=True, text=True).stdout)


def cpu_line(round_: int, job: dict[str, Any], alone: dict[str, float]) -> str:
    """Where the CPU went in one round, in CPU seconds: the service job's worker (main + OpenMP threads,
    its other threads), API and Ray against ``mmae train`` (and the idle API and Ray meanwhile)."""
    ours, theirs = job["cpu"], alone
    worker, training = ours.get("worker", 0.0), ours.get("worker training", 0.0)
    api, ray = ours.get("api", 0.0), ours.get("ray", 0.0)
    return (
        f"CPU s, round {round_:<4} service {worker + api + ray:7.1f} = worker {worker:.1f} "
        f"(main+OpenMP {training:.1f}, other threads {worker - training:.1f}) + API {api:.1f} + Ray {ray:.1f}   "
        f"mmae train {theirs['train']:.1f} (main+OpenMP {theirs.get('train training', 0.0):.1f}; "
        f"meanwhile API {theirs.get('api', 0.0):.1f}, Ray {theirs.get('ray', 0.0):.1f})   "
        f"worker / mmae train {worker / theirs['train']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "examples" / "digits_mmae.yaml")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-sweep", action="store_true")
    args = parser.parse_args()
    config = yaml.safe_load(args.config.read_text()) | {"steps": args.steps}
    config["checkpoint_every"] = min(config.get("checkpoint_every", args.steps), args.steps)
    overrides = [f"steps={args.steps}", f"checkpoint_every={config['checkpoint_every']}"]
    alone: list[tuple[float, float, CpuMeter | None]] = []
    jobs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="mmae-overhead-") as folder:
        scratch = Path(folder)
        data_dir = scratch / "data"
        database_url = f"sqlite:///{data_dir / 'mmae.db'}"
        cpus = ray_head.local_cpus()
        with (
            ray_head.temporary_head(scratch / "ray_auth_token", num_cpus=cpus, num_gpus=0) as ray_address,
            api_process(database_url, ray_address, data_dir, SHIPPED_INTERVALS) as (client, api_pid),
        ):
            watch = (api_pid, int((ray_head.head_dir(ray_address) / "head.pid").read_text()))
            for _ in range(args.rounds):
                alone.append(standalone(args.config, scratch, overrides, watch))
                jobs.append(service_job(client, database_url, config, watch))
            if not args.no_sweep:
                sweep = service_sweep(client, config)
                back_to_back = sum(
                    standalone(args.config, scratch, [*overrides, f"loss.mu={mu}"])[0] for mu in SWEEP_MUS
                )
    print(
        f"{args.config.name}, {args.steps} steps, {args.rounds} rounds, {cpus} CPUs "
        f"(service jobs got num_cpus={jobs[0]['num_cpus']:g})"
    )
    print(ratio_line("wall time", [job["wall"] for job in jobs], [wall for wall, _, _ in alone], 1.05))
    print(ratio_line("median step", [job["step"] for job in jobs], [step for _, step, _ in alone], 1.02))
    print(f"submit -> step 1   {statistics.median(job['to_first_step'] for job in jobs):8.3f} s (median)")
    print(
        f"last step -> done  {statistics.median(job['to_succeeded'] for job in jobs):8.3f} s (median, "
        "evaluation included)"
    )
    threads = torch_threads()
    for round_, (job, (_, _, meter)) in enumerate(zip(jobs, alone, strict=True), 1):
        print(cpu_line(round_, job, meter.seconds(training_threads=threads)))
    if not args.no_sweep:
        print(
            f"4-cell sweep       service {sweep:8.3f} s   back to back {back_to_back:8.3f} s   "
            f"ratio {sweep / back_to_back:.3f}  (target <= 1.05)"
        )


if __name__ == "__main__":
    main()
