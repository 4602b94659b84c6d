"""The ``mmae`` control-plane commands against a live API (uvicorn in a thread, SQLite): happy paths and
error paths (one line on stderr, exit 2 for bad input, 1 for a failed job or an unreachable API)."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
import yaml
from sqlalchemy import select

from service.api.main import create_app
from service.auth import ADMIN_TOKEN_FILE
from service.settings import Settings
from service.store.db import make_engine, make_session_factory, session_scope
from service.store.models import Job
from tests.service.conftest import Cli
from tests.tiny_config import tiny

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def api(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A live API on a free port; the CLI is pointed at it with the admin token."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("MMAE_API_URL", url)
    monkeypatch.setenv("MMAE_TOKEN", (settings.data_dir / ADMIN_TOKEN_FILE).read_text().strip())
    yield url
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny()))
    return path


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("mmae: error: "), err
    return lines[0]


def test_submit_status_logs_cancel(api: str, cli: Cli, job_file: Path) -> None:
    code, out, _ = cli(
        "submit", str(job_file), "--name", "cli-job", "--priority", "2", "--tag", "t1", "--set", "loss.mu=3"
    )
    assert code == 0 and out.strip() == "job 1 queued: cli-job"
    code, out, _ = cli("status", "1")
    assert code == 0 and "cli-job" in out and "queued" in out and "'loss.mu': 3.0" in out
    code, out, _ = cli("status")
    assert code == 0 and "cli-job" in out.splitlines()[1]
    code, out, _ = cli("logs", "1")
    assert code == 0 and out == ""
    code, out, _ = cli("cancel", "1")
    assert code == 0 and out.strip() == "job 1: cancelled"


def test_submit_asks_for_workers_each_with_its_cpus_and_gpus(
    api: str, cli: Cli, settings: Settings, job_file: Path
) -> None:
    argv = ("submit", str(job_file), "--workers", "4", "--cpus", "2", "--gpus", "0.5", "--placement", "spread")
    code, out, _ = cli(*argv)
    assert code == 0 and out.strip() == "job 1 queued: tiny"
    engine = make_engine(settings.resolved_database_url)
    try:
        with session_scope(make_session_factory(engine)) as session:
            job = session.scalar(select(Job))
            assert (job.workers, job.num_cpus, job.num_gpus, job.placement) == (4, 2.0, 0.5, "spread")
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("submit", "missing.yaml"), "config file not found"),
        (("submit", "{bad}"), "cannot parse"),
        (("submit", "{invalid}"), "invalid config field 'loss.mu'"),
        (("submit", "{unknown}"), "unknown config field 'loss.muu'"),
        (("submit", "{job}", "--set", "nokey"), "--set expects KEY=VALUE"),
        (
            ("submit", "{job}", "--gpus", "-1"),
            "resources.num_gpus: Input should be greater than or equal to 0",
        ),
        (("submit", "{job}", "--workers", "0"), "resources.workers: Input should be greater than or equal to 1"),
        (
            ("submit", "{job}", "--workers", "3"),
            "resources.workers: config.data.batch_size 64 is not divisible by resources.workers 3",
        ),
        (("submit", "{job}", "--placement", "scatter"), "argument --placement: invalid choice: 'scatter'"),
        (("submit", "{job}", "--workers", "two"), "argument --workers: invalid int value: 'two'"),
        (("status", "999"), "job 999 not found"),
        (("cancel", "999"), "job 999 not found"),
        (("logs", "999"), "job 999 not found"),
        (("status", "abc"), "invalid id 'abc'"),
        (("sweep", "{sweep_bad_path}"), "parameters.loss.muu: unknown config field 'loss.muu'"),
        (("sweep", "{sweep_missing_base}"), "cannot read"),
        (("frobnicate",), "invalid choice"),
        (("serve", "--workers", "0"), "--workers must be at least 1"),
        ((), "the following arguments are required"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    api: str, cli: Cli, tmp_path: Path, job_file: Path, argv: tuple[str, ...], message: str
) -> None:
    files = {
        "{job}": job_file,
        "{bad}": tmp_path / "bad.yaml",
        "{invalid}": tmp_path / "invalid.yaml",
        "{unknown}": tmp_path / "unknown.yaml",
        "{sweep_bad_path}": tmp_path / "sweep1.yaml",
        "{sweep_missing_base}": tmp_path / "sweep2.yaml",
    }
    files["{bad}"].write_text("loss: [unclosed\n")
    files["{invalid}"].write_text("loss:\n  mu: -1\n")
    files["{unknown}"].write_text("loss:\n  muu: 1\n")
    files["{sweep_bad_path}"].write_text("name: s\nbase_config: tiny.yaml\nparameters:\n  loss.muu:\n    values: [1]\n")
    files["{sweep_missing_base}"].write_text("name: s\nbase_config: nowhere.yaml\nparameters: {}\n")
    code, out, err = cli(*(str(files.get(arg, arg)) for arg in argv))
    assert code == 2 and out == ""
    assert message in one_line(err)


def test_missing_or_wrong_token_is_exit_2(api: str, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAE_TOKEN", "mmae_wrong")
    code, _, err = cli("status")
    assert code == 2 and "not authenticated" in one_line(err)


def test_unreachable_api_is_exit_1(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMAE_API_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MMAE_TOKEN", "x")
    code, _, err = cli("status")
    assert code == 1 and "cannot reach the mmae API" in one_line(err)


def test_submit_wait_exits_1_when_the_job_fails(api: str, cli: Cli, settings: Settings, job_file: Path) -> None:
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)

    def fail_the_job() -> None:
        for _ in range(200):
            with session_scope(factory) as session:
                job = session.scalar(select(Job))
                if job is not None:
                    job.status, job.error = "failed", "attempt 1 failed: out of memory\nlog tail"
                    return
            time.sleep(0.05)

    threading.Thread(target=fail_the_job).start()
    code, out, err = cli("submit", str(job_file), "--wait")
    engine.dispose()
    assert code == 1 and out.strip() == "job 1 queued: tiny"
    assert err.strip().splitlines()[-1] == "job 1 failed: attempt 1 failed: out of memory"


def test_sweep_submits_the_example(api: str, cli: Cli) -> None:
    code, out, _ = cli("sweep", str(ROOT / "examples" / "mu_sweep.yaml"))
    assert code == 0 and out.strip() == "sweep 1 (digits-mmae-mu): 3 cells"
    code, out, _ = cli("sweep", str(ROOT / "examples" / "mu_sweep.yaml"))
    assert code == 0 and out.strip() == "sweep 1 (digits-mmae-mu): 3 cells", "resubmission is idempotent"


def test_token_create_prints_a_working_token_once(api: str, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = cli("token", "create", "ci-bot")
    token = out.strip()
    assert code == 0 and token.startswith("mmae_") and len(out.splitlines()) == 1
    monkeypatch.setenv("MMAE_TOKEN", token)
    code, out, _ = cli("status")
    assert code == 0
    code, _, err = cli("token", "create", "")
    assert code == 2 and "1 to 100 characters" in one_line(err)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.slow
def test_serve_prints_the_token_files_path_on_first_start_only(tmp_path: Path, workers: int) -> None:
    env = {
        **os.environ,
        "MMAE_DATA_DIR": str(tmp_path / "data"),
        "MMAE_RUN_SCHEDULER": "false",
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MMAE_DATABASE_URL", None)
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(free_port()), "--workers", str(workers)]

    def first_lines() -> list[str]:
        process = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        lines = []
        try:
            for line in process.stdout:  # until every worker has started
                lines.append(line.rstrip())
                if sum("Application startup complete" in seen for seen in lines) == workers:
                    break
        finally:
            process.terminate()
            process.wait(timeout=20)
        return lines

    first = first_lines()
    token_file = tmp_path / "data" / ADMIN_TOKEN_FILE
    token = token_file.read_text().strip()
    assert sum(f"admin API token written to {token_file}" in line for line in first) == 1
    assert not any(token in line for line in first), "only the 0600 file holds the token"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    second = first_lines()
    assert not any("admin API token" in line for line in second) and token not in second
