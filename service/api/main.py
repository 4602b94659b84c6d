"""The FastAPI application: ``create_app(settings)`` builds it; its lifespan builds everything else.

Nothing happens at import. On startup the lifespan creates the engine and session factory, upgrades
the schema to the newest migration, mints the first admin token on an empty database (written to
``data_dir/admin-token``, mode 0600; only the path is printed) and creates the Ray client and the MLflow
tracker; unless ``run_scheduler`` is off, it then competes for the scheduler lease and runs the scheduler
loop while it holds it (``service.scheduling.leader``). Run with ``mmae serve`` or
``uvicorn --factory service.api.main:create_app``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from service.api.gate import RequestGate
from service.api.live import StreamSlots
from service.api.routes import auth, catalog, cluster, events, health, jobs, metrics, sweeps, web
from service.auth import TokenCache, bootstrap_admin_token
from service.cluster.ray_client import RayJobsClient
from service.errors import install_error_handlers
from service.scheduling.context import SchedulerContext
from service.scheduling.leader import SchedulerLeader, lease_for
from service.scheduling.scheduler import SchedulerLoop
from service.settings import Settings
from service.store.db import Reads, make_engine, make_session_factory, session_scope
from service.store.migrations import upgrade_to_head
from service.tracking.tracker import Tracker

log = logging.getLogger(__name__)
GZIP_LEVEL = 1  # JSON compresses almost as well at level 1 as at 9, for a fraction of the CPU


def prepare_database(settings: Settings) -> tuple[Engine, sessionmaker[Session]]:
    """Engine + session factory on a database migrated to head."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    upgrade_to_head(engine)
    return engine, make_session_factory(engine)


def announce_admin_token(factory: sessionmaker[Session], settings: Settings) -> None:
    """On an empty database, mint the admin token and print where its 0600 file is (never the token:
    process output ends up in logs)."""
    with session_scope(factory) as session:
        path = bootstrap_admin_token(session, settings.data_dir)
    if path is not None:
        print(f"mmae: first start: admin API token written to {path} (mode 0600)", flush=True)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine, factory = await asyncio.to_thread(prepare_database, settings)
    await asyncio.to_thread(announce_admin_token, factory, settings)
    app.state.engine, app.state.session_factory = engine, factory
    app.state.reads = Reads(engine, settings.read_threads)
    app.state.ray = RayJobsClient.from_settings(settings)
    app.state.tracker = Tracker(settings)
    # Every process can wake the scheduler; only those allowed to run it compete for its lease.
    leader = SchedulerLeader(
        lambda: SchedulerLoop(SchedulerContext(app.state.ray, settings, app.state.tracker), factory),
        lease_for(engine, settings.data_dir),
        settings.lease_retry_s,
    )
    app.state.scheduler = leader
    task = asyncio.create_task(leader.run(), name="scheduler") if settings.run_scheduler else None
    try:
        yield
    finally:
        if task is not None:
            leader.stop()
            await task
        engine.dispose()


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new application bound to ``settings`` (read from the environment when None)."""
    app = FastAPI(title="mmae control plane", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings = settings or Settings()
    app.state.token_cache = TokenCache()
    app.state.stream_slots = StreamSlots(settings.max_streams_per_token)
    install_error_handlers(app)
    app.add_middleware(GZipMiddleware, minimum_size=2048, compresslevel=GZIP_LEVEL)
    app.add_middleware(RequestGate, max_body_bytes=settings.max_body_bytes)  # outermost: before any body read
    for router in (
        health.router,
        auth.router,
        jobs.router,
        metrics.router,
        events.router,
        sweeps.router,
        cluster.router,
        catalog.router,
        web.router,
    ):
        app.include_router(router)
    return app
