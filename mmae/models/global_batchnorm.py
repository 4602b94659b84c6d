"""BatchNorm over the global batch under data parallelism, on any backend (gloo on CPU, NCCL on CUDA).

BatchNorm's statistics are part of the Siamese methods' objectives (projector, predictor and ResNet
layers), so with the batch split over N ranks each layer must normalise by the mean and variance of
all B rows, as one process does. ``torch.nn.SyncBatchNorm`` does that on GPUs only (it rejects CPU
tensors); ``GlobalBatchNorm`` combines every rank's per-channel (mean, sum of squared deviations)
with one differentiable all-gather of ``[2, C]`` numbers (Chan et al.'s pairwise update, so no
large sums cancel), then normalises. Its parameters and buffers are a BatchNorm's, under the same
names, so checkpoints load at any world size.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mmae.distributed import gather_rows, world_size


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm of ``[b, C, *spatial]`` inputs whose training statistics cover every rank's rows.

    Every rank must hold the same number of rows. In eval mode, in a single process, or with
    ``synchronised`` off (``local_statistics``), it is exactly ``torch.nn.BatchNorm{1,2,3}d``.
    Statistics are computed in float32 (float64 for float64 input); the output has the input's dtype.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.synchronised = True

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"GlobalBatchNorm expects [B, C, ...] input, got {input.dim()} dimensions")

    def forward(self, x: Tensor) -> Tensor:
        """``x: [b, C, *spatial]`` -> same shape, normalised per channel by the global batch's statistics."""
        if not (self.training and self.synchronised and world_size() > 1):
            return super().forward(x)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        mean, var, count = self._global_statistics(xf)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            self._update_running_statistics(mean.detach(), var.detach(), count)
        return y.to(x.dtype)

    def _global_statistics(self, x: Tensor) -> tuple[Tensor, Tensor, int]:
        """Per-channel mean and biased variance ``[C]`` of all ranks' rows, and their count per channel."""
        dims = [0, *range(2, x.dim())]
        local_count = x.numel() // x.shape[1]
        local_mean = x.mean(dims)
        local_m2 = (x - local_mean.view((1, -1) + (1,) * (x.dim() - 2))).pow(2).sum(dims)
        stats = gather_rows(torch.stack([local_mean, local_m2]).unsqueeze(0))  # [N, 2, C]
        means, m2s = stats[:, 0], stats[:, 1]
        mean = means.mean(0)
        m2 = m2s.sum(0) + local_count * (means - mean).pow(2).sum(0)
        count = local_count * stats.shape[0]
        return mean, m2 / count, count

    def _update_running_statistics(self, mean: Tensor, var: Tensor, count: int) -> None:
        """BatchNorm's running averages (unbiased variance), momentum or cumulative, without a host sync."""
        self.num_batches_tracked.add_(1)
        weight = self.momentum if self.momentum is not None else 1.0 / self.num_batches_tracked.float()
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), weight)
        unbiased = var * count / max(count - 1, 1)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), weight)


def to_global_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm layer replaced, in place, by a ``GlobalBatchNorm`` holding its state
    (values, device and dtype, training mode, which parameters require gradients)."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and not isinstance(child, GlobalBatchNorm):
            setattr(module, name, _global_copy(child))
        else:
            to_global_batchnorm(child)
    return module


def _global_copy(layer: _BatchNorm) -> GlobalBatchNorm:
    state = layer.state_dict()
    like = next((value for value in state.values() if value.is_floating_point()), torch.empty(0))
    replacement = GlobalBatchNorm(
        layer.num_features,
        layer.eps,
        layer.momentum,
        layer.affine,
        layer.track_running_stats,
        device=like.device,
        dtype=like.dtype,
    )
    replacement.load_state_dict(state)
    replacement.train(layer.training)
    for new, old in zip(replacement.parameters(), layer.parameters(), strict=True):
        new.requires_grad_(old.requires_grad)  # e.g. BYOL's target network stays frozen
    return replacement


@contextlib.contextmanager
def local_statistics(module: nn.Module) -> Iterator[None]:
    """Within: every ``GlobalBatchNorm`` of ``module`` (and of copies made of it) uses its local batch.

    For work one rank does alone (rank 0's evaluation, which may fine-tune a copy in training mode),
    where waiting for the other ranks' statistics would never end.
    """
    layers = [layer for layer in module.modules() if isinstance(layer, GlobalBatchNorm)]
    for layer in layers:
        layer.synchronised = False
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronised = True
