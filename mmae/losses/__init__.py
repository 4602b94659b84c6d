"""Self-supervised losses, one module per family, in the paper's exact forms."""

from mmae.losses.barlow_twins import barlow_twins_loss, cross_correlation
from mmae.losses.byol import byol_loss, cosine_momentum, ema_update
from mmae.losses.infonce import info_nce_loss
from mmae.losses.mae import mae_loss
from mmae.losses.mmae import MuConvention, tcr_regularizer
from mmae.losses.spectral import spectral_contrastive_loss
from mmae.losses.umae import uniformity_penalty

__all__ = [
    "MuConvention",
    "barlow_twins_loss",
    "byol_loss",
    "cosine_momentum",
    "cross_correlation",
    "ema_update",
    "info_nce_loss",
    "mae_loss",
    "spectral_contrastive_loss",
    "tcr_regularizer",
    "uniformity_penalty",
]
