"""What a job's ``data.root`` can do to a worker: CIFAR pickles are read as data only (a file that names code
is refused before anything runs), and a bad root gets one answer whatever is there."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from mmae.config import DataConfig
from mmae.data import build_datasets
from mmae.data.cifar_pickle import RefusedPickle, load_cifar_pickle

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class RunsCommand:
    """Pickles as ``os.system(command)``: what a crafted CIFAR batch would hold."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


def real_batch(n: int, rng: np.random.Generator) -> dict[bytes, object]:
    return {
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"labels": rng.integers(0, 10, size=n).tolist(),
        b"batch_label": b"training batch",
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }


def write_cifar10(folder: Path, batch_bytes: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in CIFAR10_FILES:
        (folder / name).write_bytes(batch_bytes[name])


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_every_pickle_protocol_of_a_real_batch_loads(tmp_path: Path, protocol: int) -> None:
    batch = real_batch(4, np.random.default_rng(protocol))
    batch[b"coarse"] = [np.int64(3)]  # a numpy scalar, as list(array) writes one
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    loaded = load_cifar_pickle(path)
    assert loaded[b"data"].dtype == np.uint8 and np.array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"filenames"] == batch[b"filenames"]
    assert loaded[b"coarse"] == [3]


def test_a_numpy_1_pickle_loads(tmp_path: Path) -> None:
    """The official files were written by numpy 1.x: its module is ``numpy.core``, not ``numpy._core``."""
    batch = real_batch(3, np.random.default_rng(0))
    written = pickle.dumps(batch, protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray\n_reconstruct" in written
    path = tmp_path / "data_batch_1"
    path.write_bytes(written)
    assert np.array_equal(load_cifar_pickle(path)[b"data"], batch[b"data"])


def test_a_crafted_batch_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    good = pickle.dumps(real_batch(2, np.random.default_rng(0)), protocol=2)
    crafted = pickle.dumps({b"data": RunsCommand(f"touch {marker}"), b"labels": [0]}, protocol=2)
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar10(folder, dict.fromkeys(CIFAR10_FILES, good) | {"data_batch_3": crafted})
    with pytest.raises(RefusedPickle, match=r"data_batch_3: refusing to load posix\.system"):
        build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)
    assert not marker.exists()


@pytest.mark.parametrize(
    "batch",
    [
        pytest.param(lambda command: {b"data": b"", b"labels": [0, [command]]}, id="in a list"),
        pytest.param(lambda command: {b"data": np.array([command], dtype=object)}, id="in an object array"),
    ],
)
def test_code_hidden_deep_inside_is_refused(tmp_path: Path, batch: object) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(batch(RunsCommand(f"touch {marker}")), protocol=4))
    with pytest.raises(RefusedPickle, match=r"test_batch: refusing to load posix\.system"):
        load_cifar_pickle(path)
    assert not marker.exists()


def test_the_bytes_codec_admits_latin1_only(tmp_path: Path) -> None:
    latin1, rot13 = b"X\x06\x00\x00\x00latin1", b"X\x06\x00\x00\x00rot_13"  # BINUNICODE of the codec
    written = pickle.dumps({b"data": b"abc"}, protocol=2).replace(latin1, rot13)
    path = tmp_path / "meta"
    path.write_bytes(written)
    with pytest.raises(RefusedPickle, match="codec 'rot_13'"):
        load_cifar_pickle(path)


def test_a_batch_of_the_wrong_shape_names_the_file(tmp_path: Path) -> None:
    good = pickle.dumps(real_batch(2, np.random.default_rng(0)), protocol=2)
    bad = pickle.dumps({b"data": np.zeros((2, 100), dtype=np.uint8), b"labels": [0, 1]}, protocol=2)
    write_cifar10(tmp_path, dict.fromkeys(CIFAR10_FILES, good) | {"test_batch": bad})
    with pytest.raises(ValueError, match=r"test_batch: data must be uint8 \[N, 3072\], got uint8 \[2, 100\]"):
        build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path)), seed=0)


def test_a_missing_an_empty_and_a_file_root_get_one_answer(tmp_path: Path) -> None:
    (tmp_path / "hollow").mkdir()
    (tmp_path / "plain").write_bytes(b"x")
    answers = set()
    for name in ("absent", "hollow", "plain"):
        with pytest.raises(FileNotFoundError) as raised:
            build_datasets(DataConfig(dataset="cifar10", root=str(tmp_path / name)), seed=0)
        answers.add(str(raised.value).replace(name, "<root>"))
    assert len(answers) == 1, answers
