"""The global batch of a training step and one rank's share of it: its rows and its random numbers.

``data.batch_size`` is the global batch B. With N ranks, rank r holds rows ``[r B/N, (r+1) B/N)``.
Every random number that depends on the batch (MAE masks, SimCLR views) comes from ``StepRandom``:
a generator seeded by ``(seed, step)`` draws for all B rows on every rank, and each rank keeps its
own rows. So a sample gets the same mask or view whatever the world size, and a resumed run needs
no generator state to continue exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

STEP_STREAM = 1  # keeps step draws apart from epoch orders, which are seeded by (seed, epoch)


def derived_seed(*keys: int) -> int:
    """A 32-bit seed hashed from non-negative integer ``keys`` by numpy's ``SeedSequence``.

    torch's CPU generator keeps only 32 seed bits, so tuples are hashed rather than packed.
    """
    return int(np.random.SeedSequence([key % 2**63 for key in keys]).generate_state(1)[0])


@dataclass(frozen=True)
class BatchShard:
    """Rows ``[start, stop)`` of a global batch of ``global_size`` rows: the part one rank holds."""

    global_size: int
    start: int
    stop: int

    @classmethod
    def whole(cls, global_size: int) -> BatchShard:
        """All rows: the shard of a single process."""
        return cls(global_size, 0, global_size)

    @classmethod
    def of_rank(cls, global_size: int, rank: int, world_size: int) -> BatchShard:
        """Rank ``rank``'s equal share; ``ValueError`` naming both numbers when they do not divide."""
        if global_size % world_size:
            raise ValueError(
                f"data.batch_size {global_size} is not divisible by the world size {world_size}: "
                "the batch size is the global batch, split equally over the ranks"
            )
        size = global_size // world_size
        return cls(global_size, rank * size, (rank + 1) * size)

    @property
    def size(self) -> int:
        """Rows held: ``stop - start``."""
        return self.stop - self.start


class StepRandom:
    """Random numbers of one training step for this rank's rows, drawn for the whole global batch.

    Each method returns a tensor ``[shard.size, *shape]``: rows ``[start, stop)`` of a draw of shape
    ``[global_size, *shape]`` from a generator on ``device`` seeded by ``(seed, step)``. Calls are
    consumed in order, so two ranks (or one process) making the same calls see the same global draws.
    """

    def __init__(self, seed: int, step: int, shard: BatchShard, device: torch.device | str) -> None:
        self.shard = shard
        self.device = torch.device(device)
        self.generator = torch.Generator(self.device).manual_seed(derived_seed(seed, step, STEP_STREAM))

    def _rows(self, draw: Tensor) -> Tensor:
        return draw[self.shard.start : self.shard.stop]

    def rand(self, *shape: int) -> Tensor:
        """Uniform on ``[0, 1)``, ``[b, *shape]``."""
        size = (self.shard.global_size, *shape)
        return self._rows(torch.rand(size, generator=self.generator, device=self.device))

    def uniform(self, low: float, high: float, *shape: int) -> Tensor:
        """Uniform on ``[low, high)``, ``[b, *shape]``."""
        return low + (high - low) * self.rand(*shape)

    def normal(self, *shape: int) -> Tensor:
        """Standard normal, ``[b, *shape]``."""
        size = (self.shard.global_size, *shape)
        return self._rows(torch.randn(size, generator=self.generator, device=self.device))

    def coin(self, p: float, *shape: int) -> Tensor:
        """Booleans, True with probability ``p``, ``[b, *shape]``."""
        return self.rand(*shape) < p
