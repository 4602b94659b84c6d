"""Batch streams: an endless, exactly resumable training stream and a finite, ordered evaluation stream.

Training order is a function of ``(seed, epoch)`` only, so batch ``k`` is the same whether a run started
at step 0 or resumed at step ``k``: no sampler state needs checkpointing. Under data parallelism each
rank streams its own ``BatchShard`` of the same global batches (disjoint rows, same step).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from mmae.data.bundle import DatasetBundle
from mmae.data.global_batch import BatchShard, derived_seed
from mmae.data.tensor_dataset import TensorImageDataset

Batch = tuple[Tensor, Tensor]  # (images [B, C, S, S] float normalised, labels [B] int64)


def epoch_permutation(num_items: int, seed: int, epoch: int) -> Tensor:
    """The training order of ``epoch``: a permutation of ``range(num_items)`` seeded by ``(seed, epoch)``.

    The pair is hashed by ``derived_seed`` (torch's CPU generator keeps only 32 seed bits).
    """
    generator = torch.Generator().manual_seed(derived_seed(seed, epoch))
    return torch.randperm(num_items, generator=generator)


def _loader(dataset: Dataset, batches: list[list[int]], device: torch.device, num_workers: int) -> Iterator[Batch]:
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=num_workers, pin_memory=device.type == "cuda")
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def train_batches(
    bundle: DatasetBundle,
    batch_size: int,
    seed: int,
    start_step: int = 0,
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    shard: BatchShard | None = None,
) -> Iterator[Batch]:
    """Endless stream of training batches starting at global step ``start_step``: ``shard``'s rows of each.

    Each epoch is one ``epoch_permutation`` cut into ``len(train) // batch_size`` global batches (the
    remainder is dropped); ``shard`` (default: all rows) picks this rank's rows of every one. In-memory
    datasets are gathered by tensor indexing on ``device`` (the epoch's indices are copied there once,
    without waiting on the device); lazy ones go through a ``DataLoader`` with ``num_workers`` processes,
    pinned memory and non-blocking copies on CUDA.
    """
    dataset, device = bundle.train, torch.device(device)
    shard = shard or BatchShard.whole(batch_size)
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(dataset)} training images of '{bundle.name}'")
    if isinstance(dataset, TensorImageDataset):
        dataset = dataset.to(device)
    epoch, position = divmod(start_step, steps_per_epoch)
    while True:
        order = epoch_permutation(len(dataset), seed, epoch)[: steps_per_epoch * batch_size]
        batches = order.view(steps_per_epoch, batch_size)[position:, shard.start : shard.stop]
        if isinstance(dataset, TensorImageDataset):
            batches = batches.to(device, non_blocking=True)
            yield from (dataset.batch(index, device) for index in batches)
        else:
            yield from _loader(dataset, batches.tolist(), device, num_workers)
        epoch, position = epoch + 1, 0


def eval_batches(
    dataset: Dataset, batch_size: int, device: torch.device | str = "cpu", num_workers: int = 0
) -> Iterator[Batch]:
    """Every item of ``dataset`` once, in order, in batches of ``batch_size`` (the last may be smaller)."""
    device = torch.device(device)
    order = torch.arange(len(dataset))
    chunks = order.split(batch_size)
    if isinstance(dataset, TensorImageDataset):
        yield from (dataset.batch(index, device) for index in chunks)
    else:
        yield from _loader(dataset, [chunk.tolist() for chunk in chunks], device, num_workers)
