"""Seeded class-conditional RGB images: smooth per-class prototypes plus per-sample contrast, shift and noise.

For smoke tests and benchmarks: no files, any size, linearly separable enough that a probe learns it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmae.data.bundle import DatasetBundle
from mmae.data.tensor_dataset import TensorImageDataset

SYNTHETIC_CHANNELS = 3
PROTOTYPE_GRID = 4  # prototypes are random 4x4 colour grids upsampled to the image size
NOISE_STD = 0.15


def synthetic_images(
    num_samples: int, num_classes: int, image_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [num_samples, 3, S, S] in [0, 1], labels [num_samples])`` with balanced, shuffled labels."""
    coarse = torch.rand(num_classes, SYNTHETIC_CHANNELS, PROTOTYPE_GRID, PROTOTYPE_GRID, generator=generator)
    prototypes = F.interpolate(coarse, size=(image_size, image_size), mode="bilinear", align_corners=False)
    labels = (torch.arange(num_samples) % num_classes)[torch.randperm(num_samples, generator=generator)]
    contrast = 0.7 + 0.6 * torch.rand(num_samples, 1, 1, 1, generator=generator)
    shift = 0.2 * torch.rand(num_samples, 1, 1, 1, generator=generator) - 0.1
    shape = (num_samples, SYNTHETIC_CHANNELS, image_size, image_size)
    noise = NOISE_STD * torch.randn(shape, generator=generator)
    images = (prototypes[labels] - 0.5) * contrast + 0.5 + shift + noise
    return images.clamp(0.0, 1.0), labels


def synthetic_bundle(samples_per_split: int, num_classes: int, image_size: int, seed: int) -> DatasetBundle:
    """Train and test of ``samples_per_split`` images each from the same prototypes, determined by ``seed``.

    Normalised by the train split's per-channel pixel mean/std.
    """
    generator = torch.Generator().manual_seed(seed % 2**63)
    images, labels = synthetic_images(2 * samples_per_split, num_classes, image_size, generator)
    train_images, test_images = images[:samples_per_split], images[samples_per_split:]
    mean = tuple(train_images.mean(dim=(0, 2, 3)).tolist())
    std = tuple(train_images.std(dim=(0, 2, 3)).tolist())
    train_labels, test_labels = labels[:samples_per_split], labels[samples_per_split:]
    return DatasetBundle(
        name="synthetic",
        train=TensorImageDataset(train_images, train_labels, image_size, mean, std),
        test=TensorImageDataset(test_images, test_labels, image_size, mean, std),
        in_chans=SYNTHETIC_CHANNELS,
        image_size=image_size,
        num_classes=num_classes,
        mean=mean,
        std=std,
        classes=tuple(str(i) for i in range(num_classes)),
    )
