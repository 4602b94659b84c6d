"""Session-wide fixtures: real databases (SQLite files and a PostgreSQL database made for this session)
and one local Ray head shared by every test that needs Ray.

PostgreSQL tests use a database created for this test session on the server at
``MMAE_TEST_PG_URL`` (default postgresql+psycopg://postgres@127.0.0.1:5432/test) and dropped at the
end; they are skipped when that server does not answer. The Ray head (4 logical CPUs, no GPU) is
started on first use with its own auth token file and stopped when the session ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.exc import OperationalError

from tests.tiny_config import TINY

PG_ADMIN_URL = os.environ.get("MMAE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


# A test that uses one of these fixtures needs that real service: it gets the marker whether or not its
# module says so, so ``-m "not ray and not postgres and not browser"`` (``make test-fast``) is truthful.
SERVICE_MARKERS = {
    "ray_cluster": "ray",
    "postgres_url": "postgres",
    "own_postgres_url": "postgres",
    "browser": "browser",
}
# Tests that take more than a few seconds on 2 cores (they train, start processes, wait out a timeout or
# fill a big table) carry ``@pytest.mark.slow``, so ``make test-fast`` leaves them to ``make test``; so does
# every test that uses one of these fixtures (``runs``, tests/mmae/test_distributed.py: every method in two
# ranks and in one process).
SLOW_FIXTURES = frozenset({"runs"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            if fixture in SERVICE_MARKERS:
                item.add_marker(SERVICE_MARKERS[fixture])
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("slow")


@contextmanager
def postgres_database() -> Iterator[str]:
    """Create a uniquely named PostgreSQL database, yield its URL, drop it (skips when no server answers)."""
    name = f"mmae_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as error:
        admin.dispose()
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}: {error.orig}")
    try:
        yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database that lives as long as the test session (shared by its tests)."""
    with postgres_database() as url:
        yield url


@pytest.fixture
def own_postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database of this test's own (for tests that take locks or end sessions)."""
    with postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Dashboard address of a local Ray head (4 logical CPUs, no GPU) shared by the whole session."""
    from service.cluster.ray_head import temporary_head

    with temporary_head(tmp_path_factory.mktemp("ray") / "auth_token", num_cpus=4, num_gpus=0) as address:
        yield address


@pytest.fixture(scope="session")
def migrated_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file at the newest migration, made once per session for tests to copy (migrating costs
    a quarter of a second; a copy, a millisecond)."""
    from service.store.db import make_engine
    from service.store.migrations import upgrade_to_head

    path = tmp_path_factory.mktemp("migrated") / "mmae.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade_to_head(engine)
    engine.dispose()
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def migrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a database at the newest migration: a copy of the session's migrated SQLite file, or this
    session's PostgreSQL database (migrated once, its tables emptied after the test)."""
    from service.store.db import make_engine
    from service.store.migrations import upgrade_to_head
    from service.store.models import Base

    if request.param == "sqlite":
        shutil.copyfile(request.getfixturevalue("migrated_sqlite"), tmp_path / "mmae.db")
        yield f"sqlite:///{tmp_path / 'mmae.db'}"
        return
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    upgrade_to_head(engine)
    try:
        yield url
    finally:
        names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
        with engine.begin() as connection:
            connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow sqlite store per session (creating one runs MLflow's migrations: seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@dataclass
class ControlPlane:
    """The execution side of the control plane, driven by hand: add jobs, tick, wait for states."""

    settings: Any
    factory: Any
    ray: Any
    tracker: Any

    def add_job(self, config: dict[str, Any] | None = None, **fields: Any) -> int:
        """Insert a queued job (tiny digits config unless ``config``) and return its id."""
        from mmae.config import TrainConfig, config_hash
        from service.store.models import Job

        validated = TrainConfig.model_validate(config or TINY)
        with self.factory() as session:
            fields = {"name": "test", "config_hash": config_hash(validated), **fields}
            job = Job(method=validated.method, config=validated.model_dump(mode="json"), **fields)
            session.add(job)
            session.commit()
            return job.id

    def tick(self) -> None:
        """One reconcile pass, one admission pass, then one MLflow sync pass (the loop's thread does that)."""
        from service.scheduling.context import SchedulerContext
        from service.scheduling.scheduler import admit_queued, reconcile
        from service.tracking.mlflow_sync import sync_pass

        with self.factory() as session:
            reconcile(session, SchedulerContext(self.ray, self.settings, self.tracker))
            admit_queued(session, SchedulerContext(self.ray, self.settings, self.tracker))
        sync_pass(self.factory, self.tracker)

    def job(self, job_id: int) -> Any:
        from sqlalchemy.orm import selectinload

        from service.store.models import Job

        with self.factory() as session:
            return session.get(Job, job_id, options=[selectinload(Job.attempts)])

    def wait_for(self, job_id: int, predicate: Callable[[Any], bool], timeout_s: float = 120.0) -> Any:
        """Tick until ``predicate(job)`` holds; fails the test with the job's state on timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.tick()
            job = self.job(job_id)
            if predicate(job):
                return job
            assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status}: {job.error}"
            time.sleep(0.3)

    def cancel_all(self) -> None:
        """Stop every Ray job this plane left running (tests share one Ray head)."""
        from sqlalchemy import select

        from service.store.models import Attempt

        with self.factory() as session:
            for submission_id in session.scalars(select(Attempt.ray_submission_id)):
                status = self.ray.status(submission_id)
                if status is not None and status.status in ("PENDING", "RUNNING"):
                    self.ray.stop(submission_id)


@pytest.fixture
def plane_settings(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings a test overrides in its ``plane``: parametrize indirectly with a dict of Settings fields,
    where ``"database": "postgresql"`` stands for a PostgreSQL database of the test's own."""
    fields = dict(getattr(request, "param", {}))
    if fields.pop("database", "sqlite") == "postgresql":
        fields["database_url"] = request.getfixturevalue("own_postgres_url")
    return fields


@pytest.fixture
def plane(
    tmp_path: Path,
    ray_cluster: str,
    mlflow_store: str,
    request: pytest.FixtureRequest,
    plane_settings: dict[str, Any],
) -> Iterator[ControlPlane]:
    """The execution side on a migrated SQLite file (or the database URL in ``plane_settings``), the
    session's Ray head and MLflow store (one experiment per test); Ray jobs it started are stopped
    afterwards."""
    from service.cluster.ray_client import RayJobsClient
    from service.settings import Settings
    from service.store.db import make_engine, make_session_factory
    from service.store.migrations import upgrade_to_head
    from service.tracking.tracker import Tracker

    fields = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite:///{tmp_path / 'mmae.db'}",
        "ray_address": ray_cluster,
        "mlflow_tracking_uri": mlflow_store,
        "mlflow_experiment": request.node.name,
        "reconcile_interval_s": 0.5,
        "scheduler_interval_s": 0.2,
        "stop_grace_s": 10,
        **plane_settings,
    }
    settings = Settings(**fields)
    engine = make_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    ray = RayJobsClient.from_settings(settings)
    ray.connect()
    plane = ControlPlane(settings, make_session_factory(engine), ray, Tracker(settings))
    try:
        yield plane
    finally:
        plane.cancel_all()
        engine.dispose()


class AttemptRows:
    """A job's rows in the service's tables, written by hand for tests of what workers write: the fence
    admits an attempt's writes only while the service has it pending or running."""

    def __init__(self, engine: Any, job_id: int) -> None:
        from mmae.config import TrainConfig, config_hash
        from service.store.models import Job

        self.engine, self.job_id = engine, job_id
        config = TrainConfig()
        with engine.begin() as connection:
            connection.execute(
                Job.__table__.insert().values(
                    id=job_id,
                    name="test",
                    status="running",
                    method=config.method,
                    config=config.model_dump(mode="json"),
                    config_hash=config_hash(config),
                )
            )

    def start(self, attempt_id: int) -> None:
        """Attempt ``attempt_id`` becomes the job's current one (running)."""
        from service.store.models import Attempt

        with self.engine.begin() as connection:
            connection.execute(
                Attempt.__table__.insert().values(
                    id=attempt_id, job_id=self.job_id, number=attempt_id, status="running"
                )
            )

    def end(self, attempt_id: int, status: str = "failed") -> None:
        """The service ends attempt ``attempt_id`` (as when Ray reports it dead)."""
        from sqlalchemy import update

        from service.store.models import Attempt

        with self.engine.begin() as connection:
            connection.execute(update(Attempt).where(Attempt.id == attempt_id).values(status=status))


@pytest.fixture
def attempt_rows() -> type[AttemptRows]:
    """``AttemptRows`` itself (test modules cannot import conftest at run time)."""
    return AttemptRows


@contextmanager
def extra_ray_node(address: str, num_cpus: int) -> Iterator[subprocess.Popen]:
    """A second Ray node joined to the local head at ``address`` (same machine, loopback), as
    ``ray start --block`` in its own process group: kill the group to lose the node. Yields the process."""
    from service.cluster.ray_head import auth_headers, ensure_auth_token, gcs_address, head_dir

    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": ensure_auth_token()}
    command = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--block",
        "--disable-usage-stats",
        f"--address={gcs_address(address)}",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}",
    ]
    log = head_dir(address) / f"node-{uuid.uuid4().hex[:6]}.log"
    with open(log, "ab") as output:
        node = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)

    def alive_nodes() -> set[str]:
        rows = httpx.get(f"{address}/api/v0/nodes", headers=auth_headers(), timeout=5).json()["data"]["result"]
        return {row["node_id"] for row in rows["result"] if row["state"] == "ALIVE"}

    before = alive_nodes()  # may still list a node killed a moment ago: wait for a new id, not a count
    deadline = time.monotonic() + 90
    while not alive_nodes() - before:
        assert node.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.5)
    try:
        yield node
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(node.pid, signal.SIGKILL)
        node.wait()


@pytest.fixture
def second_ray_node(ray_cluster: str) -> Iterator[subprocess.Popen]:
    """A second node of 2 CPUs joined to the session's head for one test (killing it loses the node)."""
    with extra_ray_node(ray_cluster, num_cpus=2) as node:
        yield node


def spec_with(scaling: Any) -> Any:
    """An attempt spec whose entrypoint fails once started (no such attempt): for tests of where Ray
    waits, not of what trains."""
    from mmae.config import TrainConfig
    from workers.spec import AttemptSpec

    return AttemptSpec(
        attempt_id=0,
        job_id=0,
        config=TrainConfig(),
        storage_uri="/nonexistent",
        run_name="job-0-none",
        database_url="sqlite:////nonexistent/mmae.db",
        scaling=scaling,
    )


def submitted_spec(address: str, submission_id: str) -> Any:
    """The attempt spec Ray holds for a submission (it travels in the job's runtime env)."""
    from service.cluster.ray_head import auth_headers
    from workers.spec import SPEC_ENV, AttemptSpec

    info = httpx.get(f"{address}/api/jobs/{submission_id}", headers=auth_headers(), timeout=10).json()
    return AttemptSpec.model_validate_json(info["runtime_env"]["env_vars"][SPEC_ENV])
