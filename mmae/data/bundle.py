"""The datasets of a run, built from a ``DataConfig``: one entry point over all sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import Dataset

from mmae.config import DataConfig


@dataclass(frozen=True)
class DatasetBundle:
    """Train and held-out splits with the geometry and normalisation every model and probe needs.

    ``train``/``test`` yield ``(image [in_chans, image_size, image_size] float normalised, label int)``;
    in-memory sources are ``TensorImageDataset`` (fast batched access), ImageFolder is lazy.
    ``mean``/``std`` (one per channel) undo the normalisation, e.g. for augmentation or reconstructions.
    """

    name: str
    train: Dataset
    test: Dataset
    in_chans: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...]


def build_datasets(cfg: DataConfig, seed: int) -> DatasetBundle:
    """Load ``cfg.dataset`` at ``cfg.resolved_image_size``; ``seed`` fixes the digits split and synthetic set.

    Raises ``FileNotFoundError`` naming the path when a local dataset is missing. Sources are imported
    here so that only the one in use pays its import cost (scikit-learn, PIL, torchvision).
    """
    size = cfg.resolved_image_size
    if cfg.dataset == "digits":
        from mmae.data.digits import digits_bundle

        return digits_bundle(size, seed)
    if cfg.dataset in ("cifar10", "cifar100"):
        from mmae.data.cifar import cifar_bundle

        return cifar_bundle(Path(str(cfg.root)), cfg.dataset, size)
    if cfg.dataset == "imagefolder":
        from mmae.data.imagefolder import imagefolder_bundle

        return imagefolder_bundle(Path(str(cfg.root)), size)
    from mmae.data.synthetic import synthetic_bundle

    return synthetic_bundle(cfg.synthetic_samples, cfg.synthetic_classes, size, seed)
