"""Dataset roots: the folders an operator lets jobs read (``MMAE_DATA_ROOTS``), and the check on ``data.root``.

A job's ``data.root`` names a folder on the workers, which the API cannot see. So the check is lexical:
the path must be absolute and, after ``..`` and ``.`` are folded away (``posixpath.normpath``, no
filesystem access), lie inside one of the roots. It never depends on what exists on any machine, so its
answer reveals nothing about the workers' files. Without roots only the bundled datasets (digits,
synthetic) can be used, and no config may name a root at all. ``mmae train`` is not affected: it runs
on the user's own machine.
"""

from __future__ import annotations

import posixpath
from pathlib import PurePosixPath

DataRoots = tuple[PurePosixPath, ...]


def parse_data_roots(text: str) -> DataRoots:
    """``"/data/cifar:/mnt/datasets"`` -> the normalised absolute roots; ``ValueError`` naming a relative one."""
    roots = []
    for part in filter(None, text.split(":")):
        if not posixpath.isabs(part):
            raise ValueError(f"MMAE_DATA_ROOTS: '{part}' is not an absolute path")
        roots.append(PurePosixPath(posixpath.normpath(part)))
    return tuple(roots)


def is_inside(root: str, roots: DataRoots) -> bool:
    """Whether ``root`` is an absolute path that, with ``..`` folded lexically, lies in one of ``roots``."""
    if not posixpath.isabs(root):
        return False
    path = PurePosixPath(posixpath.normpath(root))
    return any(path.is_relative_to(allowed) for allowed in roots)


def root_refusal(root: str | None, roots: DataRoots) -> str | None:
    """Why ``config.data.root`` may not be used (None when it may): it names the allowed roots, never the
    input, and reads no file."""
    if root is None or is_inside(root, roots):
        return None
    if not roots:
        return (
            "config.data.root cannot be used: this service has no dataset roots (MMAE_DATA_ROOTS), so only "
            "the bundled datasets digits and synthetic are available"
        )
    allowed = ", ".join(str(allowed) for allowed in roots)
    return f"config.data.root must be an absolute path inside one of the dataset roots: {allowed}"
