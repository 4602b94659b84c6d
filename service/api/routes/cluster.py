"""Cluster view: Ray's resources, our own accounting of what running jobs hold, and the queue."""

from __future__ import annotations

import logging

from fastapi import APIRouter
from sqlalchemy import func, select

from service.api.deps import RayDep, SessionDep, require_token
from service.cluster.ray_client import RayUnavailable
from service.schemas import ClusterOut
from service.store.models import Job
from service.store.states import ACTIVE, JobStatus

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api", tags=["cluster"], dependencies=[require_token])


@router.get("/cluster")
def cluster(session: SessionDep, ray: RayDep) -> ClusterOut:
    """``available`` is Ray's total minus what our active jobs reserved (Ray has no queue; we keep it)."""
    held_cpus, held_gpus = session.execute(
        select(func.coalesce(func.sum(Job.cpus_held), 0.0), func.coalesce(func.sum(Job.gpus_held), 0.0)).where(
            Job.status.in_(ACTIVE)
        )
    ).one()
    counts = dict(
        session.execute(
            select(Job.status, func.count(Job.id))
            .where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
            .group_by(Job.status)
        ).all()
    )
    total, nodes, state = {}, [], "unavailable"
    if ray.connected:
        try:
            resources = ray.cluster_resources()
            total, nodes, state = resources.total, resources.nodes, "ok"
        except RayUnavailable as error:
            log.warning("cluster view: %s", error)
    held = {"CPU": float(held_cpus), "GPU": float(held_gpus)}
    available = {name: max(0.0, amount - held.get(name, 0.0)) for name, amount in total.items()}
    return ClusterOut(
        resources=total,
        available=available,
        gpus_busy=held["GPU"],
        gpus_free=available.get("GPU", 0.0),
        queue_length=counts.get(JobStatus.QUEUED, 0),
        running=counts.get(JobStatus.RUNNING, 0),
        nodes=nodes,
        ray=state,
    )
