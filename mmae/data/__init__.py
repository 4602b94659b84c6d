"""Datasets (digits, CIFAR-10/100, ImageFolder, synthetic), batch streams and batched SimCLR augmentation."""

from mmae.data.augment import SimCLRAugment
from mmae.data.batches import epoch_permutation, eval_batches, train_batches
from mmae.data.bundle import DatasetBundle, build_datasets
from mmae.data.global_batch import BatchShard, StepRandom
from mmae.data.tensor_dataset import TensorImageDataset

__all__ = [
    "BatchShard",
    "DatasetBundle",
    "SimCLRAugment",
    "StepRandom",
    "TensorImageDataset",
    "build_datasets",
    "epoch_permutation",
    "eval_batches",
    "train_batches",
]
