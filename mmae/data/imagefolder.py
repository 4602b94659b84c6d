"""A local image tree ``root/{train,val|test}/<class>/<image>``, decoded lazily and resized to a square.

Images are converted to RGB, resized so the shorter side is ``image_size``, centre-cropped, and normalised
with the ImageNet channel statistics. Class ids come from the train folder's sorted subfolder names.
"""

from __future__ import annotations

from pathlib import Path

from torchvision import transforms
from torchvision.datasets import ImageFolder

from mmae.data.bundle import DatasetBundle

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HELD_OUT_FOLDERS = ("val", "test")


class ClassListImageFolder(ImageFolder):
    """``ImageFolder`` whose class ids follow a given class list (so val ids match train ids)."""

    def __init__(self, root: Path, classes: list[str], transform: transforms.Compose) -> None:
        self._class_list = classes
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._class_list), {name: i for i, name in enumerate(self._class_list)}


def _class_folders(path: Path) -> list[str]:
    return sorted(entry.name for entry in path.iterdir() if entry.is_dir())


def imagefolder_bundle(root: Path, image_size: int) -> DatasetBundle:
    """Train from ``root/train``, held-out from ``root/val`` (or ``root/test``), as ``[3, S, S]`` tensors."""
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(f"ImageFolder root {root} has no train/ folder")
    test_dir = next((root / name for name in HELD_OUT_FOLDERS if (root / name).is_dir()), None)
    if test_dir is None:
        raise FileNotFoundError(f"ImageFolder root {root} has no val/ or test/ folder")
    classes = _class_folders(train_dir)
    unknown = sorted(set(_class_folders(test_dir)) - set(classes))
    if unknown:
        raise ValueError(f"{test_dir} has classes missing from {train_dir}: {', '.join(unknown)}")
    transform = transforms.Compose(
        [
            transforms.Resize(image_size),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    return DatasetBundle(
        name="imagefolder",
        train=ImageFolder(str(train_dir), transform=transform),
        test=ClassListImageFolder(test_dir, classes, transform),
        in_chans=3,
        image_size=image_size,
        num_classes=len(classes),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        classes=tuple(classes),
    )
