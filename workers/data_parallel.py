"""Data-parallel attempts on Ray Train: one ``TorchTrainer`` whose ranks each run ``mmae.train.fit``.

The entrypoint process is the driver. It holds no CPU or GPU of its own (the service asks Ray for
none) and starts a ``TorchTrainer`` with ``spec.scaling.workers`` ranks, each holding the per-worker
CPUs and GPUs, placed PACK or SPREAD. Ray Train sets up the process group (NCCL on CUDA, gloo on
CPU); ``fit`` does the rest with plain ``torch.distributed`` (global batch, gathered losses, rank 0
alone writing). Rank 0 runs the same fenced ``train_attempt`` as a single-process attempt, so only it
reports, checkpoints and talks to SQL and MLflow. The service owns retries: Ray Train's own are off.

A coordinator actor carries what crosses between the driver and the ranks: a stop request (the
driver's SIGTERM, polled by rank 0 at most once a second) and rank 0's exit status when training
cannot go on (fenced, or a permanent error), which the driver returns as its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from mmae.callbacks import Callback
from workers.attempt import StopOnSignal, scratch_root, train_attempt, use_allocated_threads
from workers.fence import AttemptFenced
from workers.reporter import connect
from workers.spec import EXIT_FENCED, AttemptSpec

COORDINATOR_POLL_S = 1.0  # how often rank 0 asks whether the driver was told to stop


class AttemptCoordinator:
    """State shared by one data-parallel attempt's driver and rank 0 (run as a Ray actor of 0 CPUs)."""

    def __init__(self) -> None:
        self._stop = False
        self._status: int | None = None

    def request_stop(self) -> None:
        self._stop = True

    def stop_requested(self) -> bool:
        return self._stop

    def record_status(self, status: int) -> None:
        self._status = status

    def status(self) -> int | None:
        """Rank 0's exit status when it ended training with one (None: it did not say)."""
        return self._status


class CoordinatedStop(Callback):
    """Rank 0's stop check: the driver's stop request, read from the coordinator every ``poll_s``."""

    def __init__(
        self,
        stop_requested: Callable[[], bool],
        poll_s: float = COORDINATOR_POLL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stop_requested, self.poll_s, self.clock = stop_requested, poll_s, clock
        self.requested = False
        self._asked_at = -math.inf

    def should_stop(self) -> bool:
        if not self.requested and self.clock() - self._asked_at >= self.poll_s:
            self._asked_at = self.clock()
            self.requested = self.stop_requested()
        return self.requested


def train_rank(loop_config: dict[str, Any]) -> None:
    """One rank's training (Ray Train's ``train_loop_per_worker``); the process group is already up.

    Rank 0 raises when its attempt cannot go on, after recording its exit status with the coordinator,
    so that Ray Train ends every rank instead of leaving them waiting in a collective.
    """
    import ray

    from mmae.train import fit

    spec = AttemptSpec.model_validate(loop_config["spec"])
    coordinator = loop_config["coordinator"]
    rank = torch.distributed.get_rank()
    if rank != 0:  # fit gets its state from rank 0 and writes nothing on other ranks
        use_allocated_threads(spec)
        fit(spec.config, scratch_root() / f"{spec.run_name}-rank{rank}", (), resume=True)
        return
    stop = CoordinatedStop(lambda: ray.get(coordinator.stop_requested.remote()))
    try:
        status = train_attempt(spec, connect(spec.database_url), stop)
    except AttemptFenced:
        ray.get(coordinator.record_status.remote(EXIT_FENCED))
        raise
    if status != 0:
        ray.get(coordinator.record_status.remote(status))
        raise RuntimeError(f"rank 0 ended the attempt with exit status {status}")


def run_data_parallel(spec: AttemptSpec) -> int:
    """Train ``spec`` on ``spec.scaling.workers`` Ray Train ranks; returns the driver's exit status."""
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig, TrainingFailedError
    from ray.train.torch import TorchConfig, TorchTrainer

    ray.init()  # inside a Ray job: the job's own cluster
    coordinator = ray.remote(num_cpus=0)(AttemptCoordinator).remote()
    StopOnSignal(on_request=lambda: coordinator.request_stop.remote())
    scaling = spec.scaling
    per_worker = {"CPU": scaling.num_cpus, **({"GPU": scaling.num_gpus} if scaling.num_gpus else {})}
    trainer = TorchTrainer(
        train_rank,
        train_loop_config={"spec": spec.model_dump(mode="json"), "coordinator": coordinator},
        torch_config=TorchConfig(backend="nccl" if scaling.num_gpus else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=scaling.workers,
            use_gpu=scaling.num_gpus > 0,
            resources_per_worker=per_worker,
            placement_strategy=scaling.placement.upper(),
        ),
        run_config=RunConfig(
            name=f"attempt-{spec.attempt_id}",
            storage_path=str(scratch_root() / "ray-train"),
            failure_config=FailureConfig(max_failures=0, max_preemption_failures=0),
        ),
    )
    print(f"[mmae] data-parallel attempt: {scaling.workers} workers x {per_worker}, {scaling.placement}", flush=True)
    try:
        trainer.fit()
    except TrainingFailedError as error:
        status = ray.get(coordinator.status.remote())
        print(f"[mmae] data-parallel training failed: {str(error).splitlines()[0]}", flush=True)
        return 1 if status is None else status
    return 0
