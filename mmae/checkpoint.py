"""Checkpoint files: atomic writes, ``last.pt`` as the newest, and RNG capture for exact resume.

Layout: ``run_dir/checkpoints/step_00000100.pt`` per checkpoint plus ``last.pt`` (a hard link to, or
copy of, the newest). Every file appears under its final name only once it is complete (write to a
temporary name of this process's own, then ``os.replace``), so a crash mid-write never leaves a
truncated checkpoint, and two writers never mix their bytes. A ``before_publish`` check runs between
the two, so a writer that may no longer publish (a stale attempt) leaves the final names untouched.
Contents are plain tensors / numbers / strings, loadable with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LAST_NAME = "last.pt"


def last_checkpoint(run_dir: Path) -> Path | None:
    """``run_dir/checkpoints/last.pt`` when it exists, else None."""
    path = Path(run_dir) / CHECKPOINT_DIR / LAST_NAME
    return path if path.is_file() else None


def save_checkpoint(
    run_dir: Path,
    step: int,
    state: dict[str, Any],
    keep: int | None = None,
    before_publish: Callable[[], None] | None = None,
) -> Path:
    """Write ``state`` as the checkpoint of ``step`` and point ``last.pt`` at it; returns the step file.

    ``before_publish`` runs once the bytes are on disk under a temporary name; if it raises, nothing
    under a final name changes and the exception propagates. With ``keep``, only the ``keep`` newest
    step files remain afterwards (older ones are deleted).
    """
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step_{step:08d}.pt"
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_publish is not None:
            before_publish()
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _publish_last(path)
    if keep is not None:
        _prune(folder, keep)
    return path


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest ``step_*.pt`` files (names sort by step)."""
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)


def _publish_last(path: Path) -> None:
    """Atomically make ``last.pt`` next to ``path`` refer to the same bytes (hard link, else copy)."""
    tmp = path.with_name(f"{LAST_NAME}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, path.with_name(LAST_NAME))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``save_checkpoint`` (tensors land on ``map_location``)."""
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def capture_rng() -> dict[str, Any]:
    """State of the python, numpy, torch CPU and (when present) CUDA generators."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.copy()),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``: the generators continue exactly where they were captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy(), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
