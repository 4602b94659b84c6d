"""CIFAR-10 / CIFAR-100 from the official python-pickle folders (read directly: no download, no checksum).

Each pickle is a dict with bytes keys: ``b"data"`` uint8 ``[N, 3072]`` (channel-major 3x32x32) and
``b"labels"`` (CIFAR-10) or ``b"fine_labels"`` (CIFAR-100); the meta file names the classes.
The pickles are read by ``mmae.data.cifar_pickle``, which refuses anything but data, so a crafted
file under ``data.root`` cannot run code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmae.data.bundle import DatasetBundle
from mmae.data.cifar_pickle import load_cifar_pickle
from mmae.data.tensor_dataset import TensorImageDataset


@dataclass(frozen=True)
class CifarLayout:
    """File names and keys of one CIFAR variant, and its per-channel train-set pixel mean/std."""

    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    label_key: bytes
    meta_file: str
    names_key: bytes
    num_classes: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR_LAYOUTS: dict[str, CifarLayout] = {
    "cifar10": CifarLayout(
        folder="cifar-10-batches-py",
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_files=("test_batch",),
        label_key=b"labels",
        meta_file="batches.meta",
        names_key=b"label_names",
        num_classes=10,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    ),
    "cifar100": CifarLayout(
        folder="cifar-100-python",
        train_files=("train",),
        test_files=("test",),
        label_key=b"fine_labels",
        meta_file="meta",
        names_key=b"fine_label_names",
        num_classes=100,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    ),
}


def find_cifar_folder(root: Path, layout: CifarLayout) -> Path:
    """``root`` itself or ``root/<folder>``, whichever holds every batch file; else ``FileNotFoundError``."""
    for candidate in (root / layout.folder, root):
        if all((candidate / name).is_file() for name in layout.train_files + layout.test_files):
            return candidate
    expected = ", ".join(layout.train_files + layout.test_files)
    raise FileNotFoundError(f"CIFAR files not found under {root} (expected {layout.folder}/ with {expected})")


def read_cifar_dict(path: Path, keys: tuple[bytes, ...]) -> dict[bytes, Any]:
    """The dict pickled in ``path``; ``ValueError`` naming the file unless it is a dict holding ``keys``."""
    loaded = load_cifar_pickle(path)
    if not isinstance(loaded, dict) or not all(key in loaded for key in keys):
        wanted = ", ".join(key.decode() for key in keys)
        raise ValueError(f"{path.name} is not a CIFAR file: expected a dict with {wanted}")
    return loaded


def read_cifar_batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> ``(data [n, 3072] uint8, labels [n] int64)``; ``ValueError`` naming the file
    when the data is not ``n`` rows of 3072 bytes with one label each."""
    batch = read_cifar_dict(path, (b"data", label_key))
    data, labels = np.asarray(batch[b"data"]), np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path.name}: data must be uint8 [N, 3072], got {data.dtype} {list(data.shape)}")
    if labels.dtype.kind not in "iu" or labels.shape != (data.shape[0],):
        raise ValueError(f"{path.name}: {label_key.decode()} must be {data.shape[0]} integers")
    return data, labels.astype(np.int64)


def read_cifar_split(folder: Path, files: tuple[str, ...], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate batch files -> ``(images [N, 3, 32, 32] uint8, labels [N] int64)``."""
    batches = [read_cifar_batch(folder / name, label_key) for name in files]
    data = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(data.reshape(-1, 3, 32, 32)), torch.from_numpy(labels)


def read_class_names(folder: Path, layout: CifarLayout) -> tuple[str, ...]:
    """Class names from the meta file, or ``"0".."K-1"`` when it is absent."""
    meta = folder / layout.meta_file
    if not meta.is_file():
        return tuple(str(i) for i in range(layout.num_classes))
    names = read_cifar_dict(meta, (layout.names_key,))[layout.names_key]
    if not isinstance(names, list) or not all(isinstance(name, bytes) for name in names):
        raise ValueError(f"{meta.name}: {layout.names_key.decode()} must be a list of strings")
    return tuple(name.decode() for name in names)


def cifar_bundle(root: Path, name: str, image_size: int) -> DatasetBundle:
    """CIFAR-10 or CIFAR-100 (``name``) under ``root``: train = the training batches, test = test batch."""
    layout = CIFAR_LAYOUTS[name]
    folder = find_cifar_folder(root, layout)
    train_images, train_labels = read_cifar_split(folder, layout.train_files, layout.label_key)
    test_images, test_labels = read_cifar_split(folder, layout.test_files, layout.label_key)
    return DatasetBundle(
        name=name,
        train=TensorImageDataset(train_images, train_labels, image_size, layout.mean, layout.std),
        test=TensorImageDataset(test_images, test_labels, image_size, layout.mean, layout.std),
        in_chans=3,
        image_size=image_size,
        num_classes=layout.num_classes,
        mean=layout.mean,
        std=layout.std,
        classes=read_class_names(folder, layout),
    )
