"""Dataset loaders (real file formats, written here), batch streams and the batched SimCLR augmentation."""

from __future__ import annotations

import pickle
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

from mmae.config import DataConfig
from mmae.data import (
    BatchShard,
    DatasetBundle,
    SimCLRAugment,
    StepRandom,
    TensorImageDataset,
    build_datasets,
    eval_batches,
    train_batches,
)


def pixels(dataset: TensorImageDataset, images: torch.Tensor) -> torch.Tensor:
    """Undo the normalisation of served images -> [0, 1] pixels."""
    mean = torch.tensor(dataset.mean).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std).view(1, -1, 1, 1)
    return images * std + mean


def indexed_bundle(num_items: int) -> DatasetBundle:
    """A bundle whose labels are the item indices, so batches reveal which items they hold."""
    images = torch.rand(num_items, 1, 4, 4)
    train = TensorImageDataset(images, torch.arange(num_items), 4, (0.5,), (0.25,))
    return DatasetBundle("indexed", train, train, 1, 4, num_items, (0.5,), (0.25,), ())


# ---------------------------------------------------------------- digits


def test_digits_is_the_real_sklearn_set_with_a_stratified_split() -> None:
    bundle = build_datasets(DataConfig(dataset="digits"), seed=0)
    assert (bundle.name, bundle.in_chans, bundle.image_size, bundle.num_classes) == ("digits", 1, 8, 10)
    assert (len(bundle.train), len(bundle.test)) == (1437, 360)
    image, label = bundle.test[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and isinstance(label, int)
    reference = load_digits()
    ref = {(tuple(img.astype(int).ravel()), int(t)) for img, t in zip(reference.images, reference.target, strict=True)}
    for split in (bundle.train, bundle.test):
        raw = (split.images * 16).round().long().flatten(1)
        assert {(tuple(row.tolist()), int(t)) for row, t in zip(raw, split.labels, strict=True)} <= ref
    train_counts = torch.bincount(bundle.train.labels, minlength=10)
    test_counts = torch.bincount(bundle.test.labels, minlength=10)
    all_counts = torch.from_numpy(np.bincount(reference.target))
    assert (train_counts + test_counts).equal(all_counts)
    assert ((test_counts.float() / all_counts - 0.2).abs() < 0.02).all()  # stratified
    train_pixels = pixels(bundle.train, torch.stack([bundle.train[i][0] for i in range(len(bundle.train))]))
    assert torch.allclose(train_pixels, bundle.train.images, atol=1e-5)
    normalised = bundle.train.prepare(bundle.train.images)
    assert abs(normalised.mean().item()) < 1e-4 and abs(normalised.std().item() - 1) < 1e-3


def test_digits_split_is_deterministic_per_seed() -> None:
    a, b = (build_datasets(DataConfig(dataset="digits"), seed=7) for _ in range(2))
    assert a.train.images.equal(b.train.images) and a.test.labels.equal(b.test.labels)
    c = build_datasets(DataConfig(dataset="digits"), seed=8)
    assert not a.test.images.equal(c.test.images)


def test_digits_resized_on_request() -> None:
    bundle = build_datasets(DataConfig(dataset="digits", image_size=16), seed=0)
    images, _ = next(eval_batches(bundle.test, 4))
    assert bundle.image_size == 16 and images.shape == (4, 1, 16, 16) and bundle.test[0][0].shape == (1, 16, 16)


# ---------------------------------------------------------------- CIFAR (official python-pickle format)


def write_pickle(path: Path, obj: dict) -> None:
    with path.open("wb") as f:
        pickle.dump(obj, f, protocol=2)


def fake_batch(n: int, num_classes: int, label_key: bytes, rng: np.random.Generator) -> dict[bytes, object]:
    return {
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, num_classes, size=n).tolist(),
        b"batch_label": b"fake",
    }


def write_cifar10(parent: Path) -> Path:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 6):
        write_pickle(folder / f"data_batch_{i}", fake_batch(3, 10, b"labels", rng))
    write_pickle(folder / "test_batch", fake_batch(4, 10, b"labels", rng))
    names = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    write_pickle(folder / "batches.meta", {b"label_names": names, b"num_vis": 3072})
    return folder


def write_cifar100(parent: Path) -> Path:
    folder = parent / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", 6), ("test", 2)):
        batch = fake_batch(n, 100, b"fine_labels", rng)
        batch[b"coarse_labels"] = rng.integers(0, 20, size=n).tolist()
        write_pickle(folder / split, batch)
    names = [f"class{i}".encode() for i in range(100)]
    write_pickle(folder / "meta", {b"fine_label_names": names, b"coarse_label_names": names[:20]})
    return folder


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar10_reads_official_pickles(tmp_path: Path, use_parent: bool) -> None:
    folder = write_cifar10(tmp_path)
    root = tmp_path if use_parent else folder
    bundle = build_datasets(DataConfig(dataset="cifar10", root=str(root)), seed=0)
    assert (len(bundle.train), len(bundle.test), bundle.num_classes, bundle.in_chans) == (15, 4, 10, 3)
    assert bundle.classes[0] == "airplane" and bundle.classes[9] == "truck"
    with (folder / "data_batch_2").open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    image, label = bundle.train[3]  # first image of data_batch_2
    assert label == batch[b"labels"][0]
    expected = torch.from_numpy(batch[b"data"][0].reshape(3, 32, 32)).float() / 255
    assert torch.allclose(pixels(bundle.train, image[None])[0], expected, atol=1e-5)
    assert image.shape == (3, 32, 32)


def test_cifar100_reads_fine_labels(tmp_path: Path) -> None:
    folder = write_cifar100(tmp_path)
    bundle = build_datasets(DataConfig(dataset="cifar100", root=str(tmp_path)), seed=0)
    with (folder / "test").open("rb") as f:
        test = pickle.load(f, encoding="bytes")
    assert (len(bundle.train), len(bundle.test), bundle.num_classes) == (6, 2, 100)
    assert bundle.test.labels.tolist() == test[b"fine_labels"]
    assert bundle.classes[42] == "class42"
    assert build_datasets(DataConfig(dataset="cifar100", root=str(folder)), seed=0).test.labels.equal(
        bundle.test.labels
    )


def test_cifar_resized_on_request(tmp_path: Path) -> None:
    write_cifar10(tmp_path)
    bundle = build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path), image_size=16), seed=0)
    images, labels = next(train_batches(bundle, 5, seed=0))
    assert images.shape == (5, 3, 16, 16) and labels.dtype == torch.int64


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100", "imagefolder"])
def test_missing_root_names_the_path(tmp_path: Path, dataset: str) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_datasets(DataConfig(dataset=dataset, root=str(missing), image_size=8), seed=0)


def test_cifar_with_missing_batch_is_an_error(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_5"):
        build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)


# ---------------------------------------------------------------- ImageFolder


def write_image_tree(root: Path, layout: dict[str, dict[str, int]]) -> None:
    rng = np.random.default_rng(0)
    for split, classes in layout.items():
        for name, count in classes.items():
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels_ = rng.integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
                mode = "L" if i % 2 else "RGB"  # grey images are converted to RGB
                Image.fromarray(pixels_).convert(mode).save(root / split / name / f"{i}.png")


def test_imagefolder_reads_pngs_with_train_class_ids(tmp_path: Path) -> None:
    write_image_tree(tmp_path, {"train": {"cat": 3, "dog": 4}, "val": {"dog": 2}})
    bundle = build_datasets(DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=8), seed=0)
    assert (bundle.num_classes, bundle.classes, bundle.in_chans, bundle.image_size) == (
        2,
        ("cat", "dog"),
        3,
        8,
    )
    assert (len(bundle.train), len(bundle.test)) == (7, 2)
    image, label = bundle.test[0]
    assert image.shape == (3, 8, 8) and label == 1  # "dog" keeps its train id though val has no "cat"
    assert sorted(bundle.train[i][1] for i in range(7)) == [0, 0, 0, 1, 1, 1, 1]


def test_imagefolder_accepts_test_folder_and_rejects_unknown_classes(tmp_path: Path) -> None:
    write_image_tree(tmp_path / "a", {"train": {"cat": 2}, "test": {"cat": 1}})
    assert len(build_datasets(DataConfig(dataset="imagefolder", root=str(tmp_path / "a"), image_size=8), 0).test) == 1
    write_image_tree(tmp_path / "b", {"train": {"cat": 2}, "val": {"cow": 1}})
    with pytest.raises(ValueError, match="cow"):
        build_datasets(DataConfig(dataset="imagefolder", root=str(tmp_path / "b"), image_size=8), seed=0)


def test_imagefolder_batches_resume_exactly(tmp_path: Path) -> None:
    write_image_tree(tmp_path, {"train": {"cat": 3, "dog": 4}, "val": {"dog": 1}})
    bundle = build_datasets(DataConfig(dataset="imagefolder", root=str(tmp_path), image_size=8), seed=0)
    stream = list(islice(train_batches(bundle, 2, seed=5), 6))  # 3 batches per epoch
    resumed = next(train_batches(bundle, 2, seed=5, start_step=4))
    assert resumed[0].equal(stream[4][0]) and resumed[1].equal(stream[4][1])
    assert stream[0][0].shape == (2, 3, 8, 8)


# ---------------------------------------------------------------- synthetic


def test_synthetic_is_seeded_and_class_conditional() -> None:
    cfg = DataConfig(dataset="synthetic", synthetic_samples=200, synthetic_classes=4, image_size=16)
    a, b = build_datasets(cfg, seed=1), build_datasets(cfg, seed=1)
    assert a.train.images.equal(b.train.images) and not a.train.images.equal(build_datasets(cfg, 2).train.images)
    assert (len(a.train), len(a.test), a.in_chans, a.num_classes) == (200, 200, 3, 4)
    train_x, train_y = next(eval_batches(a.train, 200))
    test_x, test_y = next(eval_batches(a.test, 200))
    assert train_x.shape == (200, 3, 16, 16)
    centroids = torch.stack([train_x[train_y == k].mean(0) for k in range(4)]).flatten(1)
    predicted = torch.cdist(test_x.flatten(1), centroids).argmin(1)
    assert (predicted == test_y).float().mean() > 0.9  # nearest class mean separates the classes


# ---------------------------------------------------------------- batch streams


def test_train_batches_deterministic_reshuffled_and_resumable() -> None:
    bundle = indexed_bundle(23)  # batch 5 -> 4 batches per epoch, 3 items dropped each epoch
    stream = [labels for _, labels in islice(train_batches(bundle, 5, seed=3), 12)]
    again = [labels for _, labels in islice(train_batches(bundle, 5, seed=3), 12)]
    assert all(a.equal(b) for a, b in zip(stream, again, strict=True))
    for epoch in range(3):
        items = torch.cat(stream[4 * epoch : 4 * epoch + 4])
        assert items.unique().numel() == 20  # no repeats inside an epoch
    assert not torch.cat(stream[:4]).equal(torch.cat(stream[4:8]))  # new order each epoch
    for k in (1, 4, 6, 11):
        images, labels = next(train_batches(bundle, 5, seed=3, start_step=k))
        assert labels.equal(stream[k])
        assert images.equal(bundle.train.prepare(bundle.train.images[labels]))
    other_seed = [labels for _, labels in islice(train_batches(bundle, 5, seed=4), 4)]
    assert not torch.cat(other_seed).equal(torch.cat(stream[:4]))


def test_train_batches_rejects_batch_larger_than_dataset() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        next(train_batches(indexed_bundle(4), 5, seed=0))


def test_eval_batches_cover_everything_in_order() -> None:
    bundle = indexed_bundle(11)
    batches = list(eval_batches(bundle.test, 4))
    assert [len(labels) for _, labels in batches] == [4, 4, 3]
    assert torch.cat([labels for _, labels in batches]).equal(torch.arange(11))


# ---------------------------------------------------------------- augmentation


def test_simclr_views_differ_and_are_reproducible() -> None:
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    augment = SimCLRAugment(32, 3, mean=mean, std=std)
    x = (torch.rand(6, 3, 32, 32) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    random = StepRandom(seed=0, step=5, shard=BatchShard.whole(6), device="cpu")
    view1, view2 = augment(x, random), augment(x, random)
    assert view1.shape == view2.shape == x.shape and view1.dtype == torch.float32
    assert not torch.allclose(view1, view2)
    assert augment(x, StepRandom(seed=0, step=5, shard=BatchShard.whole(6), device="cpu")).equal(view1)
    assert not augment(x, StepRandom(seed=0, step=6, shard=BatchShard.whole(6), device="cpu")).equal(view1)
    as_pixels = view1 * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert as_pixels.min() >= -1e-5 and as_pixels.max() <= 1 + 1e-5


def test_simclr_resizes_single_channel_and_keeps_dtype() -> None:
    augment = SimCLRAugment(16, 1)
    view = augment(torch.rand(4, 1, 8, 8, dtype=torch.float64), StepRandom(0, 0, BatchShard.whole(4), "cpu"))
    assert view.shape == (4, 1, 16, 16) and view.dtype == torch.float64


def test_blur_smooths_and_keeps_constant_images() -> None:
    augment = SimCLRAugment(32, 3, blur_prob=1.0)
    x = torch.rand(4, 3, 32, 32)
    blurred = augment.blur(x, StepRandom(0, 0, BatchShard.whole(4), "cpu"))
    assert blurred.diff(dim=-1).abs().mean() < 0.8 * x.diff(dim=-1).abs().mean()
    constant = torch.full((2, 3, 32, 32), 0.3)
    assert torch.allclose(augment.blur(constant, StepRandom(0, 0, BatchShard.whole(2), "cpu")), constant, atol=1e-6)
