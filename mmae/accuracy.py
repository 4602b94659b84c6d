"""Top-k classification accuracy."""

from __future__ import annotations

from torch import Tensor


def topk_accuracy(scores: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> tuple[float, ...]:
    """Fraction of rows whose label is among the k highest scores, for each k.

    scores: [N, C] logits or votes; labels: [N] int. k is capped at C (top-5 of 3 classes is 1.0).
    """
    top = scores.topk(min(max(ks), scores.shape[1]), dim=1).indices  # [N, k_max]
    hits = top == labels.view(-1, 1)
    return tuple(hits[:, : min(k, scores.shape[1])].any(dim=1).float().mean().item() for k in ks)


def count_correct(scores: Tensor, labels: Tensor) -> Tensor:
    """Number of rows of scores [N, C] whose argmax equals labels [N] (0-dim tensor, no host sync)."""
    return (scores.argmax(dim=1) == labels).sum()
