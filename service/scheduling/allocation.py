"""The default CPU allocation: ``resources.num_cpus: "auto"``, resolved to a number when a job is submitted.

A worker trains with as many torch threads as it holds CPUs (``workers.attempt``), and Ray admits by the
same numbers, so the allocation is what decides speed and packing:

- a CPU job (``num_gpus`` 0) gets the largest node's CPUs, split evenly over its workers: a lone job
  trains as fast as ``mmae train`` on that node;
- a GPU job gets ``CPUS_PER_GPU`` per GPU (at most what its node has): GPU jobs pack by GPU, not by CPU.

A sweep's cells are jobs, so under ``auto`` CPU cells take a whole node each and run one after another,
each with every core; never N cells x all cores. To run N cells at once on an N-core node instead, give
``resources.num_cpus: 1`` (one thread each). A number, when given, is kept as it is.
"""

from __future__ import annotations

import math

from fastapi import HTTPException

from service.cluster.ray_client import RayClient, RayUnavailable
from service.cluster.ray_head import local_cpus
from service.schemas import Resources

CPUS_PER_GPU = 4  # data loading and augmentation threads beside each GPU


def node_totals(ray: RayClient) -> list[dict[str, float]]:
    """Each alive node's resource totals: Ray's (cached) answer, or this machine's CPUs when the local
    head is ours to start and not running (it will offer exactly ``local_cpus()``).

    Raises ``RayUnavailable`` when a remote cluster cannot be reached."""
    if ray.start_local and not ray.connected and not ray.is_available():
        return [{"CPU": float(local_cpus())}]
    return [node["resources"] for node in ray.cluster_resources().nodes]


def resolve(resources: Resources, nodes: list[dict[str, float]]) -> Resources:
    """``resources`` with ``num_cpus: "auto"`` replaced by its number for a cluster of ``nodes``."""
    if resources.num_cpus != "auto":
        return resources
    if resources.num_gpus > 0:
        holders = [node for node in nodes if node.get("GPU", 0.0) >= resources.num_gpus] or nodes
        node_cpus = max((node.get("CPU", 0.0) for node in holders), default=0.0)
        cpus = min(node_cpus, math.ceil(CPUS_PER_GPU * resources.num_gpus))
    else:
        node_cpus = max((node.get("CPU", 0.0) for node in nodes), default=0.0)
        cpus = math.floor(node_cpus / resources.workers)
    return resources.model_copy(update={"num_cpus": float(max(1, cpus))})


def resolved(resources: Resources, ray: RayClient) -> Resources:
    """``resources`` for a request: ``auto`` resolved against ``ray``'s nodes; a 503 when that needs a
    remote cluster that cannot be reached (a number needs no cluster: such a job queues while Ray is down)."""
    if resources.num_cpus != "auto":
        return resources
    try:
        return resolve(resources, node_totals(ray))
    except RayUnavailable as error:
        raise HTTPException(
            503,
            f"resources.num_cpus 'auto' needs the cluster's size and Ray is unreachable ({error}); "
            "give resources.num_cpus a number",
        ) from error
