"""``/api/health`` (public): 200 with each dependency's state, 503 naming the ones that are down.

The database is asked ``SELECT 1`` (PostgreSQL connects with a 5 s timeout, see ``service.store.db``); Ray's
dashboard is probed with a 2 s timeout, remembered for ``RayJobsClient.probe_ttl_s``. A load balancer or the
compose health check (``curl -f``) sees an outage of either as a failing check.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.api.deps import RayDep, SessionDep
from service.schemas import Health

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["health"])


@router.get("/health", responses={503: {"model": Health, "description": "a dependency is unavailable"}})
def health(session: SessionDep, ray: RayDep, response: Response) -> Health:
    """Each dependency's state; 503 (with ``failing`` naming them) when any is unavailable."""
    try:
        session.execute(text("SELECT 1"))
        database = "ok"
    except SQLAlchemyError as error:
        log.warning("health: database unavailable: %s", error)
        database = "unavailable"
    states = {"database": database, "ray": "ok" if ray.is_available() else "unavailable"}
    failing = [name for name, state in states.items() if state != "ok"]
    if failing:
        response.status_code = 503
    return Health(status="unavailable" if failing else "ok", failing=failing, **states)
