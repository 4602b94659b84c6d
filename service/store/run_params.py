"""A job's key parameters: the few config fields that tell runs apart at a glance in lists and tables.

They are computed once, when a job is created (its config never changes), and stored on the job, so
the job list never reads the full config.
"""

from __future__ import annotations

from typing import Any

COMMON_PARAMS: tuple[str, ...] = ("data.dataset", "model.arch", "steps")
METHOD_PARAMS: dict[str, tuple[str, ...]] = {
    "mae": ("model.mask_ratio",),
    "umae": ("model.mask_ratio", "loss.uniformity_lambda"),
    "mmae": ("model.mask_ratio", "loss.mu", "loss.tcr_lambda", "loss.mu_convention"),
    "simclr": ("loss.temperature",),
    "spectral": ("loss.spectral_lambda",),
    "barlow_twins": ("loss.barlow_lambda",),
    "byol": ("loss.byol_momentum",),
}


def dotted(config: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (``"loss.mu"``) of a config dict, or None when it has none."""
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def key_params(method: str, config: dict[str, Any], cell_params: dict[str, Any] | None) -> dict[str, Any]:
    """The method's own knobs, the common ones, then the sweep cell's overrides (``{"loss.mu": 3.0, ...}``)."""
    paths = (*METHOD_PARAMS.get(method, ()), *COMMON_PARAMS)
    return {path: dotted(config, path) for path in paths} | (cell_params or {})
