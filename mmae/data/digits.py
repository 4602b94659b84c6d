"""scikit-learn's bundled 8x8 handwritten digits (UCI optdigits): 1797 images, 10 classes, 1 channel."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from mmae.data.bundle import DatasetBundle
from mmae.data.tensor_dataset import TensorImageDataset

DIGITS_TEST_FRACTION = 0.2


def digits_bundle(image_size: int, seed: int) -> DatasetBundle:
    """Stratified 80/20 split drawn with ``seed`` (same seed, same split); pixels 0..16 scaled to [0, 1].

    Normalised by the mean and standard deviation of the train split's pixels (one channel).
    """
    digits = load_digits()
    images = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=DIGITS_TEST_FRACTION,
        stratify=labels.numpy(),
        random_state=seed % 2**32,
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    mean = (float(images[train_idx].mean()),)
    std = (float(images[train_idx].std()),)
    return DatasetBundle(
        name="digits",
        train=TensorImageDataset(images[train_idx], labels[train_idx], image_size, mean, std),
        test=TensorImageDataset(images[test_idx], labels[test_idx], image_size, mean, std),
        in_chans=1,
        image_size=image_size,
        num_classes=10,
        mean=mean,
        std=std,
        classes=tuple(str(name) for name in digits.target_names),
    )
