"""What every pretraining objective exposes to the training loop.

An objective owns the networks of one method (encoder, decoder or projector heads, BYOL's target)
and turns a batch of images into a loss. The loop in ``mmae.train`` never branches on the method.
Under data parallelism an objective sees this rank's b = B/N rows; it gathers what couples samples
with ``mmae.distributed.gather_rows`` so its loss and outputs are those of the global batch B
(see ``mmae.distributed`` for why the gradients are then exact).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mmae.data import StepRandom


@dataclass(frozen=True)
class StepOutput:
    """Result of one objective forward pass.

    loss: scalar to minimise (carries the graph): this rank's share, whose mean over ranks is the
        global batch's loss.
    metrics: ``train/*`` values as detached 0-dim tensors, this rank's shares like ``loss`` (turned
        into floats, averaged over ranks, only at log steps, so a CUDA step never waits on the host).
    monitor_views: detached [B, d] feature matrices of the global batch for the information monitor:
        one view for the MAE family (CLS of the masked pass), two for Siamese methods (branch 1, 2).
    """

    loss: Tensor
    metrics: dict[str, Tensor]
    monitor_views: tuple[Tensor, ...]


class Objective(nn.Module):
    """Base class: ``forward(images, random) -> StepOutput`` plus an unmasked feature extractor."""

    feature_dim: int  # F, the width of ``encode``'s output (the online and offline probes' input)
    monitor_dim: int  # d, the width of each ``StepOutput.monitor_views`` matrix

    def forward(self, images: Tensor, random: StepRandom) -> StepOutput:
        """images: [b, C, H, W] normalised, this rank's rows; random: the step's draws (masks, views)."""
        raise NotImplementedError

    def encode(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, F] features of the clean, unmasked input (evaluation, fine-tuning)."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """Hook run after each optimizer step (``step`` = steps completed); BYOL updates its EMA here."""
