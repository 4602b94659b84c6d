"""Read a CIFAR python-format pickle without letting it run code.

``pickle.load`` calls any function a file names, so a crafted "batch" under ``data.root`` could run
commands on the worker. ``load_cifar_pickle`` resolves only the globals that the CIFAR files and
numpy's array pickles use (every numpy 1.x / 2.x spelling, pickle protocols 0-5):

- ``numpy.ndarray``, ``numpy.dtype`` and numpy's reconstructors ``_reconstruct`` (protocols 0-4),
  ``_frombuffer`` (protocol 5) and ``scalar`` (a numpy number, e.g. a label taken from an array);
- ``_codecs.encode`` for bytes written by Python 3 at protocols 0-2, admitted for ``latin1`` only,
  the one codec pickle uses for them.

Everything else (``os.system``, ``builtins.eval``, ``copyreg._reconstructor``, ...) is refused with
``RefusedPickle`` before it is resolved, so nothing it names ever runs. Dicts, lists, tuples, str,
bytes and numbers need no global and load as usual.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

NUMPY_GLOBALS = frozenset(
    {("numpy", "ndarray"), ("numpy", "dtype")}
    | {
        (f"{package}.{module}", name)
        for package in ("numpy.core", "numpy._core")  # numpy 1.x writes the first, numpy 2.x the second
        for module, name in (("multiarray", "_reconstruct"), ("multiarray", "scalar"), ("numeric", "_frombuffer"))
    }
)
BYTES_CODEC = ("_codecs", "encode")
PICKLE_BYTES_ENCODINGS = frozenset({"latin1", "latin-1", "iso-8859-1"})


class RefusedPickle(pickle.UnpicklingError):
    """A pickle that names a global a CIFAR file never holds (code it would run, or an unknown type)."""


def latin1_bytes(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    """What ``_codecs.encode`` does for the bytes pickle writes at protocols 0-2, and nothing else."""
    if encoding.lower() not in PICKLE_BYTES_ENCODINGS or errors != "strict" or not isinstance(text, str):
        raise RefusedPickle(f"refusing _codecs.encode with codec {encoding!r}: pickled bytes use latin1 only")
    return codecs.encode(text, "latin1")


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that resolves numpy's array helpers and the latin1 bytes codec, and refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in NUMPY_GLOBALS:
            return super().find_class(module, name)
        if (module, name) == BYTES_CODEC:
            return latin1_bytes
        raise RefusedPickle(
            f"refusing to load {module}.{name}: a CIFAR file holds only dicts, lists, strings, numbers and numpy arrays"
        )


def load_cifar_pickle(path: Path) -> Any:
    """The object pickled in ``path`` (Python 2 strings read as bytes, as the CIFAR files need).

    Raises ``RefusedPickle`` naming the file and the global when it names anything else.
    """
    with path.open("rb") as handle:
        try:
            return CifarUnpickler(handle, encoding="bytes").load()
        except RefusedPickle as error:
            raise RefusedPickle(f"{path.name}: {error}") from None
