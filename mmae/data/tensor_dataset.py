"""In-memory image dataset: raw pixels stay compact; resizing and normalisation happen per batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset


class TensorImageDataset(Dataset):
    """Images held as one tensor, served resized to ``image_size`` and normalised by ``mean``/``std``.

    images: ``[N, C, h, w]``, either uint8 in 0..255 or float in [0, 1]; labels: ``[N]`` integer class ids.
    Items are ``(image [C, S, S] float32, label int)``; ``batch`` serves many at once without a Python loop.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        image_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
    ) -> None:
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"expected images [N, C, H, W] and labels [N], got {tuple(images.shape)}, {tuple(labels.shape)}"
            )
        if images.shape[1] != len(mean) or len(mean) != len(std):
            raise ValueError(f"need one mean/std per channel ({images.shape[1]}), got {mean}, {std}")
        self.images = images
        self.labels = labels.long()
        self.image_size = image_size
        self.mean = mean
        self.std = std
        # [1, C, 1, 1] on the images' device, made once: building them per batch would copy from the
        # host, and wait on the device, at every step
        self.mean_tensor = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
        self.std_tensor = torch.tensor(std, device=images.device).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return self.prepare(self.images[index : index + 1])[0], int(self.labels[index])

    def to(self, device: torch.device | str) -> TensorImageDataset:
        """The same dataset with its raw tensors on ``device`` (so batches are gathered there)."""
        return TensorImageDataset(self.images.to(device), self.labels.to(device), self.image_size, self.mean, self.std)

    def prepare(self, images: Tensor) -> Tensor:
        """Raw pixels ``[B, C, h, w]`` (on any device) -> normalised float ``[B, C, S, S]``."""
        x = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean_tensor.to(x.device)) / self.std_tensor.to(x.device)

    def batch(self, index: Tensor, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """Rows ``index [B]`` -> ``(images [B, C, S, S] float32 normalised, labels [B] int64)`` on device."""
        index = index.to(self.images.device)
        images = self.images[index].to(device, non_blocking=True)
        return self.prepare(images), self.labels[index].to(device, non_blocking=True)
