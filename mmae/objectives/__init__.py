"""Pretraining objectives, one module per method family; ``build_objective`` picks one from the config."""

from __future__ import annotations

from mmae.config import MAE_FAMILY, TrainConfig
from mmae.objectives.base import Objective, StepOutput
from mmae.objectives.masked import MaskedObjective
from mmae.objectives.siamese import SiameseObjective


def build_objective(
    config: TrainConfig,
    in_chans: int,
    image_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Objective:
    """The objective of ``config.method`` for images [B, in_chans, image_size, image_size].

    ``mean``/``std``: the dataset's per-channel normalisation, so Siamese augmentations act on pixels.
    """
    if config.method in MAE_FAMILY:
        return MaskedObjective(config, in_chans, image_size)
    return SiameseObjective(config, in_chans, image_size, mean, std)


__all__ = ["MaskedObjective", "Objective", "SiameseObjective", "StepOutput", "build_objective"]
