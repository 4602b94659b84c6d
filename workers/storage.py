"""A job's run storage at a URI: where its checkpoints live, so that an attempt on any node resumes it.

``MMAE_STORAGE_URI`` is either an absolute local path (or ``file://`` URI) on a filesystem every node
mounts, or ``s3://bucket/prefix`` in object storage. A run's storage is ``<uri>/<run name>``.

- **Local path**: the run's storage is a run directory in ``mmae.checkpoint``'s own layout
  (``checkpoints/step_*.pt`` and ``last.pt``). A worker trains in it directly
  (``local_run_dir``), and then restoring and publishing copy nothing: ``fit`` has already written
  the checkpoint there, fenced by its ``before_checkpoint_publish`` hook.
- **S3**: ``checkpoints/step_00000100.<writer>.pt`` per checkpoint and ``checkpoints/last.json``, a
  small pointer ``{"step": 100, "object": "step_00000100.<writer>.pt"}``. Publishing uploads the step
  object under a name of this writer's own, runs the fence, then writes the pointer. Each PUT is atomic,
  so a reader following the pointer sees a whole checkpoint (the new one or the previous one), and a
  stale writer can neither overwrite the current writer's bytes nor make its own visible. Credentials
  come from the AWS SDK's default chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` first), the
  endpoint from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, the region from ``AWS_REGION`` or
  ``AWS_DEFAULT_REGION``.

A storage that cannot be reached or refuses access raises ``StorageError`` naming the run's URI (never
credentials). torch and pyarrow are imported where they are used, so the service can validate the
URI (``open_run_storage`` or ``parse_storage_uri``) without loading them.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import SplitResult, unquote, urlsplit

from mmae.callbacks import Callback

if TYPE_CHECKING:
    from pyarrow.fs import S3FileSystem

STORAGE_URI_SETTING = "MMAE_STORAGE_URI"
POINTER_NAME = "last.json"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_STEP_OBJECT = re.compile(r"step_(\d+)\.([0-9a-f]+)\.pt")
_CHUNK = 8 << 20  # bytes per read/write when copying checkpoints


class StorageError(RuntimeError):
    """A run's storage could not be reached or refused access; the message names its URI and the cause."""


class RunStorage(ABC):
    """The checkpoints of one run, kept at ``uri``; ``keep`` is how many step checkpoints remain."""

    def __init__(self, uri: str, keep: int) -> None:
        self.uri = uri
        self.keep = keep

    @abstractmethod
    def local_run_dir(self, scratch_root: Path) -> Path:
        """The directory ``fit`` should write to: the storage itself when it is local, else under
        ``scratch_root``."""

    @abstractmethod
    def restore(self, local_run_dir: Path) -> int | None:
        """Make ``local_run_dir/checkpoints/last.pt`` the newest published checkpoint (none when there is
        none) and return its step, or None, so that ``fit(..., resume=True)`` continues from it."""

    @abstractmethod
    def publish(self, step: int, local_path: Path, before_publish: Callable[[], None]) -> None:
        """Make the finished checkpoint ``local_path`` of ``step`` the newest one readers see, then keep
        only the ``keep`` newest. ``before_publish`` runs right before it becomes visible; if it raises,
        the previous checkpoint stays the newest and the exception propagates."""

    @contextmanager
    def _reported(self, action: str) -> Iterator[None]:
        """Turn the storage client's ``OSError`` into a one-line ``StorageError`` naming the URI."""
        try:
            yield
        except OSError as error:
            raise StorageError(f"run storage {self.uri}: cannot {action}: {_cause(error)}") from error


class LocalRunStorage(RunStorage):
    """A run directory on a filesystem every node mounts (today's layout, written by ``fit`` itself)."""

    def __init__(self, directory: Path, keep: int) -> None:
        super().__init__(str(directory), keep)
        self.directory = directory

    def local_run_dir(self, scratch_root: Path) -> Path:
        return self.directory

    def restore(self, local_run_dir: Path) -> int | None:
        from mmae.checkpoint import last_checkpoint

        with self._reported("read the last checkpoint"):
            source = last_checkpoint(self.directory)
            if _same_dir(local_run_dir, self.directory):
                return None if source is None else _checkpoint_step(source)
            _clear_checkpoints(local_run_dir)
            if source is None:
                return None
            return _checkpoint_step(_install_last(local_run_dir, lambda: open(source, "rb")))

    def publish(self, step: int, local_path: Path, before_publish: Callable[[], None]) -> None:
        """Nothing to do when ``fit`` wrote into the storage; from elsewhere, the checkpoint is saved
        again under the storage's own atomic, fenced, pruned ``save_checkpoint``."""
        from mmae.checkpoint import CHECKPOINT_DIR, load_checkpoint, save_checkpoint

        if _same_dir(local_path.parent, self.directory / CHECKPOINT_DIR):
            return
        with self._reported(f"publish the checkpoint of step {step}"):
            save_checkpoint(self.directory, step, load_checkpoint(local_path), self.keep, before_publish)


class S3RunStorage(RunStorage):
    """A run's checkpoints as S3 objects under ``bucket/prefix/name/checkpoints`` (see the module doc)."""

    def __init__(self, root: str, name: str, keep: int) -> None:
        super().__init__(f"s3://{root}/{name}", keep)
        self.name = name
        self.bucket = root.split("/", 1)[0]
        self.folder = f"{root}/{name}/checkpoints"
        self.writer = secrets.token_hex(4)  # makes this writer's object names its own
        self.fs = _s3_filesystem()

    def local_run_dir(self, scratch_root: Path) -> Path:
        return scratch_root / self.name

    def restore(self, local_run_dir: Path) -> int | None:
        with self._reported("read the last checkpoint"):
            self._check_bucket()
            pointer = self._read_pointer()
            _clear_checkpoints(local_run_dir)
            if pointer is None:
                return None
            step, name = pointer
            _install_last(local_run_dir, lambda: self.fs.open_input_stream(f"{self.folder}/{name}"))
        return step

    def publish(self, step: int, local_path: Path, before_publish: Callable[[], None]) -> None:
        name = f"step_{step:08d}.{self.writer}.pt"
        with self._reported(f"upload the checkpoint of step {step}"):
            self._upload(local_path, name)
        try:
            before_publish()
        except BaseException:
            with suppress(OSError):  # a leftover is harmless: never pointed to, pruned by the next publish
                self.fs.delete_file(f"{self.folder}/{name}")
            raise
        with self._reported(f"publish the checkpoint of step {step}"):
            with self.fs.open_output_stream(f"{self.folder}/{POINTER_NAME}") as sink:
                sink.write(json.dumps({"step": step, "object": name}).encode())
            self._prune(step, name)

    def _upload(self, local_path: Path, name: str) -> None:
        with open(local_path, "rb") as source, self.fs.open_output_stream(f"{self.folder}/{name}") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)

    def _check_bucket(self) -> None:
        """Fail at once, rather than at the first upload, when the bucket does not exist."""
        from pyarrow.fs import FileType

        if self.fs.get_file_info(self.bucket).type == FileType.NotFound:
            raise StorageError(f"run storage {self.uri}: bucket '{self.bucket}' does not exist")

    def _read_pointer(self) -> tuple[int, str] | None:
        """(step, object name) of the newest published checkpoint, or None when there is none."""
        try:
            with self.fs.open_input_stream(f"{self.folder}/{POINTER_NAME}") as stream:
                raw = stream.read()
        except FileNotFoundError:
            return None
        try:
            pointer = json.loads(raw)
            step, name = int(pointer["step"]), str(pointer["object"])
        except (ValueError, TypeError, KeyError) as error:
            raise StorageError(f"run storage {self.uri}: {POINTER_NAME} is malformed ({error})") from None
        if not _STEP_OBJECT.fullmatch(name):
            raise StorageError(f"run storage {self.uri}: {POINTER_NAME} names no checkpoint object ({name!r})")
        return step, name

    def _prune(self, step: int, name: str) -> None:
        """Delete every step object but the ``keep`` newest at or below ``step`` (on a tie, ``name``
        first): older checkpoints and the leftovers of writers whose publish was refused."""
        from pyarrow.fs import FileSelector

        found = [
            (int(match[1]), info.base_name)
            for info in self.fs.get_file_info(FileSelector(self.folder))
            if (match := _STEP_OBJECT.fullmatch(info.base_name))
        ]
        ranked = sorted((found_step, other == name, other) for found_step, other in found if found_step <= step)
        kept = {other for *_, other in ranked[-self.keep :]}
        for _, other in found:
            if other not in kept:
                self.fs.delete_file(f"{self.folder}/{other}")


class CheckpointUploader(Callback):
    """Publishes every checkpoint ``fit`` writes to the run's storage, fenced by ``fence`` (raises to
    refuse: an attempt that is no longer current). Put it before callbacks that record a checkpoint as
    saved, so they run once it is in storage."""

    def __init__(self, storage: RunStorage, fence: Callable[[], None]) -> None:
        self.storage = storage
        self.fence = fence

    def on_checkpoint(self, step: int, path: Path) -> None:
        self.storage.publish(step, path, self.fence)


def open_run_storage(uri: str, run_name: str, keep: int) -> RunStorage:
    """The storage of run ``run_name`` under ``uri`` (see ``parse_storage_uri``), keeping ``keep`` step
    checkpoints. Raises ValueError for a bad URI or a run name that is not one plain path segment."""
    if not _RUN_NAME.fullmatch(run_name):
        raise ValueError(
            f"run name {run_name!r} must be one path segment of letters, digits, '.', '_' and '-' "
            "that does not start with '.' (no '/', no '..')"
        )
    root = parse_storage_uri(uri)
    if isinstance(root, Path):
        return LocalRunStorage(root / run_name, keep)
    return S3RunStorage(root, run_name, keep)


def parse_storage_uri(uri: str) -> Path | str:
    """An absolute local path or ``file://`` URI -> its ``Path``; ``s3://bucket[/prefix]`` -> ``"bucket[/prefix]"``.

    Anything else is a ValueError naming ``MMAE_STORAGE_URI`` and the reason.
    """
    parts = urlsplit(uri)
    if parts.scheme == "s3":
        return _s3_root(parts)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
            raise ValueError(
                f"{STORAGE_URI_SETTING}: {uri!r} must be file:///absolute/path (no host, query or fragment)"
            )
        path = Path(unquote(parts.path))
    elif parts.scheme == "":
        path = Path(uri)
    else:
        raise ValueError(
            f"{STORAGE_URI_SETTING}: scheme '{parts.scheme}' is not supported; use an absolute path, "
            "file:///path or s3://bucket/prefix"
        )
    if not path.is_absolute():
        raise ValueError(f"{STORAGE_URI_SETTING}: {uri!r} must be an absolute path")
    return path


def _s3_root(parts: SplitResult) -> str:
    """``bucket`` or ``bucket/prefix`` of an ``s3://`` URI, each part checked."""
    if "@" in parts.netloc:
        raise ValueError(
            f"{STORAGE_URI_SETTING}: an s3:// URI must not carry credentials; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY instead"
        )
    uri = parts.geturl()
    if not _BUCKET.fullmatch(parts.netloc):
        raise ValueError(
            f"{STORAGE_URI_SETTING}: {uri!r} needs a bucket name of 3-63 lowercase letters, digits, '.' and '-'"
        )
    if parts.query or parts.fragment:
        raise ValueError(f"{STORAGE_URI_SETTING}: {uri!r} must be s3://bucket/prefix (no query or fragment)")
    prefix = parts.path.strip("/")
    segments = prefix.split("/") if prefix else []
    if any(segment in ("", ".", "..") for segment in segments):
        raise ValueError(f"{STORAGE_URI_SETTING}: {uri!r} has an empty, '.' or '..' segment in its prefix")
    return "/".join([parts.netloc, *segments])


def _s3_filesystem() -> S3FileSystem:
    """pyarrow's S3 client with the endpoint and region of the environment (credentials: the SDK's chain)."""
    from pyarrow.fs import S3FileSystem

    return S3FileSystem(
        endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
    )


def _cause(error: OSError) -> str:
    """The client's error without request details: ``AWS Error ACCESS_DENIED during HeadObject ...``."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    start = text.find("AWS Error ")
    return text[start:].split("; Details:")[0] if start >= 0 else text


def _same_dir(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def _clear_checkpoints(local_run_dir: Path) -> None:
    """Remove a working copy's checkpoint files, so that only what storage holds is resumed from (a
    stale newer ``step_*.pt`` would also outrank, and get pruned instead of, the next one ``fit`` writes)."""
    from mmae.checkpoint import CHECKPOINT_DIR

    folder = Path(local_run_dir) / CHECKPOINT_DIR
    for stale in folder.glob("*.pt") if folder.is_dir() else ():
        stale.unlink(missing_ok=True)


def _install_last(local_run_dir: Path, open_source: Callable[[], BinaryIO]) -> Path:
    """Copy a checkpoint to ``local_run_dir/checkpoints/last.pt`` through a temporary name, so a failed
    copy never leaves a truncated ``last.pt``; returns its path."""
    from mmae.checkpoint import CHECKPOINT_DIR, LAST_NAME

    target = Path(local_run_dir) / CHECKPOINT_DIR / LAST_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{LAST_NAME}.{os.getpid()}.download")
    try:
        with open_source() as source, open(tmp, "wb") as sink:
            shutil.copyfileobj(source, sink, _CHUNK)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def _checkpoint_step(path: Path) -> int:
    """The step a checkpoint file holds (memory-mapped: its tensors are not read)."""
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["step"])
