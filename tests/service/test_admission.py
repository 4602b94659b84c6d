"""Admission accounting without Ray: hand-made cluster shapes for "can never fit", and the resources
active multi-worker jobs hold in a real database (SQLite, PostgreSQL)."""

from __future__ import annotations

from typing import Any

import pytest

from mmae.config import TrainConfig, config_hash
from service.cluster.ray_client import ClusterResources
from service.scheduling.scheduler import _free, _never_fits, worker_places
from service.store.db import make_engine, make_session_factory
from service.store.models import Job
from service.store.states import JobStatus


def cluster(*nodes: dict[str, float]) -> ClusterResources:
    """A cluster of alive nodes with these totals (``{"CPU": 8, "GPU": 1}``), as the Ray client reports it."""
    rows = [
        {"node_id": f"n{i}", "ip": "127.0.0.1", "is_head": i == 0, "resources": dict(node)}
        for i, node in enumerate(nodes)
    ]
    total = {name: sum(node.get(name, 0.0) for node in nodes) for name in ("CPU", "GPU")}
    return ClusterResources(total=total, nodes=rows)


def job(workers: int = 1, num_cpus: float = 1.0, num_gpus: float = 0.0, **fields: Any) -> Job:
    config = TrainConfig()
    return Job(
        name="j",
        method=config.method,
        config=config.model_dump(mode="json"),
        config_hash=config_hash(config),
        workers=workers,
        num_cpus=num_cpus,
        num_gpus=num_gpus,
        placement="pack",
        **fields,
    )


TWO_ONE_GPU_NODES = cluster({"CPU": 8, "GPU": 1}, {"CPU": 8, "GPU": 1})


def test_workers_that_fit_only_across_two_nodes_are_not_refused() -> None:
    assert _never_fits(job(workers=2, num_gpus=1), TWO_ONE_GPU_NODES) is None


def test_more_workers_than_the_nodes_can_place_fail_naming_the_numbers() -> None:
    reason = _never_fits(job(workers=4, num_gpus=1), TWO_ONE_GPU_NODES)
    assert reason == (
        "can never fit: the job needs 4 workers x 1 CPU and 1 GPU, but the cluster's 2 Ray node(s) can place at most 2"
    )


def test_one_worker_must_fit_on_one_node_even_when_the_cluster_has_enough_in_total() -> None:
    reason = _never_fits(job(num_gpus=2), TWO_ONE_GPU_NODES)
    assert reason is not None and "needs 1 CPU and 2 GPU on one node" in reason
    assert "the most any node has: 8 CPU, 1 GPU" in reason


def test_a_worker_needs_its_cpus_and_gpus_on_the_same_node() -> None:
    cpu_node, gpu_node = {"CPU": 16, "GPU": 0}, {"CPU": 1, "GPU": 1}
    assert worker_places(cluster(cpu_node, gpu_node), 2, 1) == 0
    assert _never_fits(job(num_cpus=2, num_gpus=1), cluster(cpu_node, gpu_node)) is not None
    assert _never_fits(job(num_cpus=1, num_gpus=1), cluster(cpu_node, gpu_node)) is None


@pytest.mark.parametrize(
    ("nodes", "num_cpus", "num_gpus", "places"),
    [
        (({"CPU": 8, "GPU": 1},), 4, 0, 2),  # a resource the worker does not need limits nothing
        (({"CPU": 8, "GPU": 2}, {"CPU": 3, "GPU": 8}), 2, 1, 2 + 1),  # the scarcer resource per node
        (({"CPU": 1, "GPU": 1},), 0.1, 0.1, 10),  # fractions: 1.0 / 0.1 is ten whole workers
        (({"CPU": 4},), 1, 1, 0),  # a node without the resource holds none
        ((), 1, 0, 0),
    ],
)
def test_worker_places_sums_whole_workers_per_node(
    nodes: tuple[dict[str, float], ...], num_cpus: float, num_gpus: float, places: int
) -> None:
    assert worker_places(cluster(*nodes), num_cpus, num_gpus) == places


def test_a_cluster_without_nodes_yet_refuses_nothing() -> None:
    assert _never_fits(job(workers=256, num_gpus=8), cluster()) is None


def test_active_jobs_hold_all_their_workers_resources(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with make_session_factory(engine)() as session:
            session.add_all(
                [
                    job(workers=2, num_cpus=1.5, num_gpus=0.5, status=JobStatus.RUNNING),
                    job(workers=1, num_cpus=1, num_gpus=0, status=JobStatus.STARTING),
                    job(workers=8, num_cpus=1, num_gpus=1, status=JobStatus.QUEUED),  # holds nothing yet
                    job(workers=8, num_cpus=1, num_gpus=1, status=JobStatus.SUCCEEDED),
                ]
            )
            session.commit()
            free = _free(session, TWO_ONE_GPU_NODES)
    finally:
        engine.dispose()
    assert free == {"CPU": 16 - 2 * 1.5 - 1, "GPU": 2 - 2 * 0.5}
