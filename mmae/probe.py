"""Linear probes: the online probe trained alongside pretraining, and the offline probe on frozen features.

Both put a parameter-free standardisation in front of a linear layer, as MAE's linear probing does
(He et al., 2022: BatchNorm without affine before the classifier). The online probe learns, on the
steps the information monitor runs, from ``frozen_features`` of that step's batch: the encoder's
features of the clean, unmasked and un-augmented images, as the offline probe sees them, computed
without gradient, so it never changes the encoder. (On a frozen 100-step MAE encoder on digits, 200
updates on the masked pass's features, 4 of 16 patches of a digit, reached 22-27% at learning rates
1e-3 to 3e-2; on whole images 77% at 1e-3 and 88% at 1e-2; the offline probe read 83%.) Its accuracy is that
of its pre-update logits on the batches since the previous read. Under data parallelism every rank
updates it with the same gathered global batch, so its BatchNorm sees all B rows and its state stays
identical on every rank.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.accuracy import count_correct, topk_accuracy
from mmae.objectives import Objective
from mmae.runtime import autocast


@torch.no_grad()
def frozen_features(objective: Objective, images: Tensor, device: torch.device, precision: str) -> Tensor:
    """``objective.encode(images)``: [b, F] float32 features of whole (unmasked) images [b, C, H, W], in eval mode
    (BatchNorm on its running statistics, none updated) and without gradient; the mode is restored."""
    was_training = objective.training
    objective.eval()
    with autocast(device, precision):
        features = objective.encode(images).float()
    objective.train(was_training)
    return features


class OnlineProbe(nn.Module):
    """BatchNorm (no affine) + Linear on detached [B, F] features, with its own AdamW optimizer."""

    def __init__(self, feature_dim: int, num_classes: int, lr: float) -> None:
        super().__init__()
        norm = nn.BatchNorm1d(feature_dim, affine=False)
        self.head = nn.Sequential(norm, nn.Linear(feature_dim, num_classes))
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=0.0)
        self.register_buffer("correct", torch.zeros((), dtype=torch.long))
        self.register_buffer("seen", torch.zeros((), dtype=torch.long))

    def update(self, features: Tensor, labels: Tensor) -> None:
        """One SGD step on features [B, F] / labels [B]; counts accuracy of the pre-update logits."""
        logits = self.head(features.detach().float())
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.correct += count_correct(logits.detach(), labels)
        self.seen += labels.numel()

    def read_accuracy(self) -> float | None:
        """Training accuracy since the previous read (None when no batch was seen); resets the count."""
        seen = int(self.seen)
        accuracy = int(self.correct) / seen if seen else None
        self.correct.zero_()
        self.seen.zero_()
        return accuracy

    def full_state(self) -> dict[str, Any]:
        """Weights, BN statistics, accuracy counters and optimizer state (for checkpoints)."""
        return {"module": self.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_full_state(self, state: dict[str, Any]) -> None:
        """Inverse of ``full_state``."""
        self.load_state_dict(state["module"])
        self.optimizer.load_state_dict(state["optimizer"])


def linear_probe(
    train: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    num_classes: int,
    epochs: int,
    lr: float,
    seed: int,
    batch_size: int = 256,
) -> tuple[float, float]:
    """Offline linear probe: fit on frozen train features, return test (top-1, top-5).

    train/test: (features [N, F] float, labels [N] long) on one device. Features are standardised
    with the training mean/std; AdamW (no decay) with a cosine learning rate over ``epochs``. ``seed``
    fixes the head's initialisation and the batch order without touching the global RNG.
    """
    (x_train, y_train), (x_test, y_test) = train, test
    mean, std = x_train.mean(dim=0), x_train.std(dim=0).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = nn.Linear(x_train.shape[1], num_classes).to(x_train.device)
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(x_train) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    for _ in range(epochs):
        order = torch.randperm(len(x_train), generator=generator).to(x_train.device)
        for batch in order.split(batch_size):
            loss = F.cross_entropy(head(x_train[batch]), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    with torch.no_grad():
        top1, top5 = topk_accuracy(head(x_test), y_test)
    return top1, top5
