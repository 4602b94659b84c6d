"""One training job on many processes with plain ``torch.distributed`` (torchrun, Ray Train, ``mp.spawn``).

Nothing here knows who started the processes: ``fit`` runs in one process as before, and under an
initialised process group every rank runs it with the same config. The rules every piece follows:

- ``data.batch_size`` is the global batch B; each of the N ranks holds B/N rows (``BatchShard``).
- A loss that couples samples (M-MAE's TCR, U-MAE's uniformity, InfoNCE, spectral contrastive,
  Barlow Twins) is computed by every rank on the global batch, gathered with ``gather_rows``. Its
  backward sums the N ranks' identical gradients into each rank's rows, and DDP then averages the
  parameter gradients over the N ranks: every parameter receives exactly the gradient one process gets
  on the whole batch, so lambda and gamma mean the same at every world size. (The official M-MAE
  ``GatherLayer`` returns only the local gradient, which leaves its lambda divided by N.) Per-sample
  mean losses (MAE reconstruction, BYOL) stay local: the mean of N equal shard means is the batch mean.
- Host-side decisions (stop, resume state, the final summary) are rank 0's, sent over a CPU (gloo)
  group, so deciding never waits on the GPU stream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist
import torch.distributed._functional_collectives as funcol
from torch import Tensor

from mmae.data.global_batch import BatchShard

T = TypeVar("T")

# How long a rank waits for rank 0 at a control message. Rank 0's final evaluation (feature extraction,
# linear probe, optional fine-tuning) runs while the others wait for its summary, and can take hours.
CONTROL_TIMEOUT = timedelta(hours=6)


def world_size() -> int:
    """Processes in the default group; 1 when ``torch.distributed`` is not initialised."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_rows(x: Tensor) -> Tensor:
    """Every rank's ``x: [b, ...]`` stacked in rank order, ``[N b, ...]``, on every rank; ``x`` in one process.

    Differentiable: the backward reduce-scatters with a sum, so rank r's rows receive the gradient of
    every rank's use of them (``torch.distributed.nn.functional.all_gather`` semantics, without its
    deprecation). All ranks must call it with the same shape.
    """
    if world_size() == 1:
        return x
    return funcol.wait_tensor(funcol.all_gather_single(x.contiguous(), 0, dist.group.WORLD))


def mean_over_ranks(x: Tensor) -> Tensor:
    """Elementwise mean of ``x`` over ranks, detached (e.g. metrics of each rank's shard); ``x`` in one process."""
    n = world_size()
    if n == 1:
        return x
    total = x.detach().clone()
    dist.all_reduce(total)
    return total / n


@dataclass(frozen=True)
class Ranks:
    """This process's place in a run: its rank, the world size, and the CPU group for rank 0's decisions."""

    rank: int
    world_size: int
    control: dist.ProcessGroup | None = None  # gloo; None in a single process

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that calls callbacks, reads and writes the run directory and evaluates."""
        return self.rank == 0

    def shard(self, global_batch: int) -> BatchShard:
        """This rank's rows of a global batch; ``ValueError`` naming both numbers when N does not divide it."""
        return BatchShard.of_rank(global_batch, self.rank, self.world_size)

    def decide(self, flag: bool) -> bool:
        """Rank 0's ``flag`` on every rank (the others' argument is ignored)."""
        if self.control is None:
            return flag
        message = torch.tensor([int(flag)], dtype=torch.uint8)
        dist.broadcast(message, src=0, group=self.control)
        return bool(message.item())

    def share(self, value: T) -> T:
        """Rank 0's picklable ``value`` on every rank (the others' argument is ignored)."""
        if self.control is None:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


SINGLE_PROCESS = Ranks(rank=0, world_size=1)


@contextlib.contextmanager
def joined_ranks() -> Iterator[Ranks]:
    """The ``Ranks`` of this process for one run.

    ``SINGLE_PROCESS`` when ``torch.distributed`` is not initialised (or has one rank); otherwise every
    rank must enter together: a gloo control group is created on entry and destroyed on exit.
    """
    n = world_size()
    if n == 1:
        yield SINGLE_PROCESS
        return
    control = dist.new_group(backend="gloo", timeout=CONTROL_TIMEOUT)
    try:
        yield Ranks(dist.get_rank(), n, control)
    finally:
        dist.destroy_process_group(control)
