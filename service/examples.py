"""Example job and sweep files (``examples/*.yaml``) as ready-to-send API request bodies.

A job file is a TrainConfig mapping. A sweep file has ``name``, ``parameters`` and ``base_config``
(an inline mapping, or the path of a job file relative to the sweep file).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger(__name__)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"


class ExampleError(ValueError):
    """A job or sweep file that cannot be read."""


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ExampleError(f"cannot read {path}: {error.strerror or error}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ExampleError(f"cannot parse {path}{where}: {getattr(error, 'problem', None) or error}") from error
    if not isinstance(data, dict):
        raise ExampleError(f"{path} must hold a mapping, got {type(data).__name__}")
    return data


def is_sweep(data: dict[str, Any]) -> bool:
    return "parameters" in data


def sweep_body(path: Path) -> dict[str, Any]:
    """The POST /api/sweeps body of a sweep file (a ``base_config`` path replaced by that file's mapping)."""
    data = read_yaml(path)
    base = data.get("base_config")
    if isinstance(base, str):
        data["base_config"] = read_yaml((path.parent / base).resolve())
    return data


def load_examples(folder: Path = EXAMPLES_DIR) -> list[tuple[str, str, dict[str, Any]]]:
    """``(name, kind, body)`` for every readable ``*.yaml`` in ``folder``, sorted by name."""
    examples = []
    for path in sorted(folder.glob("*.yaml")):
        try:
            data = read_yaml(path)
            if is_sweep(data):
                examples.append((path.stem, "sweep", sweep_body(path)))
            else:
                examples.append((path.stem, "job", {"name": path.stem, "config": data}))
        except ExampleError as error:
            log.warning("skipping example: %s", error)
    return examples
