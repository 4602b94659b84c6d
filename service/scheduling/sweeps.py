"""Expand a sweep's parameter space over dotted config fields into cells (one validated config each).

Grid takes the cartesian product of every parameter's ``values``; random draws ``num_samples`` cells
(``values`` uniformly, or a distribution) from a generator seeded by the sweep's ``seed``, so the
same request always yields the same cells. Cells are identified by ``mmae.config.config_hash``;
duplicates collapse into one. A sweep asking for more than ``max_cells`` (``MMAE_MAX_SWEEP_CELLS``) is
refused before any cell is built.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mmae.config import TrainConfig, apply_overrides, config_hash, flatten_config
from service.schemas import DistributionSpec, SweepCreate, ValuesSpec


@dataclass(frozen=True)
class Cell:
    params: dict[str, Any]  # dotted field -> value, as applied to the base config
    config: TrainConfig
    config_hash: str


class SweepSpecError(ValueError):
    """Bad sweep parameters; ``loc`` locates the offending part of the request body."""

    def __init__(self, loc: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def expand(request: SweepCreate, max_cells: int) -> list[Cell]:
    """The distinct cells of ``request``, in generation order; raises ``SweepSpecError`` on bad parameters
    or when the grid (or ``num_samples``) asks for more than ``max_cells`` (``Settings.max_sweep_cells``)."""
    check_parameter_paths(request.base_config, request.parameters)
    cells: dict[str, Cell] = {}
    for assignment in _assignments(request, max_cells):
        config = _cell_config(request.base_config, assignment)
        flat = flatten_config(config)
        params = {path: flat[path] for path in assignment}  # as validated: 1 -> 1.0 for a float field
        cells.setdefault(config_hash(config), Cell(params, config, config_hash(config)))
    return list(cells.values())


def check_parameter_paths(base: TrainConfig, parameters: dict[str, Any]) -> None:
    """Every parameter must name a leaf field of the config (``loss.mu``, not ``loss`` or ``loss.muu``)."""
    leaves = flatten_config(base)
    for path in parameters:
        if path not in leaves:
            raise SweepSpecError(("parameters", path), f"unknown config field '{path}'")


def _assignments(request: SweepCreate, max_cells: int) -> Iterator[dict[str, Any]]:
    if request.strategy == "grid":
        return _grid(request.parameters, max_cells)
    if request.num_samples is None:
        raise SweepSpecError(("num_samples",), "num_samples is required for strategy 'random'")
    if request.num_samples > max_cells:
        raise SweepSpecError(("num_samples",), f"{request.num_samples} cells asked for; {_at_most(max_cells)}")
    return _random(request.parameters, request.num_samples, request.seed)


def _at_most(max_cells: int) -> str:
    return f"a sweep may have at most {max_cells} cells (MMAE_MAX_SWEEP_CELLS)"


def _grid(parameters: dict[str, ValuesSpec | DistributionSpec], max_cells: int) -> Iterator[dict[str, Any]]:
    for path, spec in parameters.items():
        if not isinstance(spec, ValuesSpec):
            raise SweepSpecError(("parameters", path), "grid sweeps need a 'values' list, not a distribution")
    size = math.prod(len(spec.values) for spec in parameters.values())
    if size > max_cells:
        raise SweepSpecError(("parameters",), f"the grid has {size} cells; {_at_most(max_cells)}")
    names = list(parameters)
    for combo in itertools.product(*(parameters[name].values for name in names)):
        yield dict(zip(names, combo, strict=True))


def _random(
    parameters: dict[str, ValuesSpec | DistributionSpec], num_samples: int, seed: int
) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for _ in range(num_samples):
        yield {path: _draw(spec, rng) for path, spec in parameters.items()}


def _draw(spec: ValuesSpec | DistributionSpec, rng: random.Random) -> Any:
    if isinstance(spec, ValuesSpec):
        return rng.choice(spec.values)
    if spec.distribution == "uniform":
        return rng.uniform(spec.low, spec.high)
    if spec.distribution == "log_uniform":
        return math.exp(rng.uniform(math.log(spec.low), math.log(spec.high)))
    return rng.randint(math.ceil(spec.low), math.floor(spec.high))


def _cell_config(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """Apply one cell's values; an invalid value is reported against the parameter that set it."""
    try:
        return apply_overrides(base, params)
    except ValidationError as error:
        first = error.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        if field in params:
            raise SweepSpecError(("parameters", field), f"value {params[field]!r}: {message}") from error
        raise SweepSpecError(("parameters",), f"cell {params}: {message}") from error
