"""Two-view (Siamese) objectives: SimCLR, spectral contrastive, Barlow Twins and BYOL.

Both views come from ``SimCLRAugment`` applied to the same batch; branch k maps view k through the
backbone (features h_k [B, F]) and the projector (embeddings z_k [B, d]). Losses (paper §3.3):
SimCLR InfoNCE (Eq. 1), spectral contrastive (Eq. 2), Barlow Twins (Eq. 3); BYOL (Grill et al.,
2020) regresses the online predictor onto an EMA target network, symmetrised over the views.

Under data parallelism the three pair losses run on the embeddings of the global batch, gathered
over ranks with their gradient (all ranks' negatives; Barlow Twins' standardisation and
cross-correlation over all B rows); BYOL's per-sample loss stays local, and its EMA update is the
same on every rank because the online weights are. BatchNorm layers see the global batch when
``mmae.models.to_global_batchnorm`` has converted them (``fit`` does, at world size > 1).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mmae.config import TrainConfig
from mmae.data import SimCLRAugment, StepRandom
from mmae.distributed import gather_rows
from mmae.losses import (
    barlow_twins_loss,
    byol_loss,
    cosine_momentum,
    ema_update,
    info_nce_loss,
    spectral_contrastive_loss,
)
from mmae.models import build_backbone, prediction_mlp, projection_mlp
from mmae.objectives.base import Objective, StepOutput


class SiameseObjective(Objective):
    """Joint-embedding objective for ``method`` in {"simclr", "spectral", "barlow_twins", "byol"}."""

    def __init__(
        self,
        config: TrainConfig,
        in_chans: int,
        image_size: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.method = config.method
        self.loss_cfg = config.loss
        self.total_steps = config.steps
        backbone, self.feature_dim = build_backbone(config.model, image_size, in_chans)
        m = config.model
        self.monitor_dim = m.projector_dim
        projector = projection_mlp(self.feature_dim, m.projector_hidden_dim, m.projector_dim)
        self.online = nn.Sequential(backbone, projector)
        self.augment = SimCLRAugment(image_size, in_chans, mean, std)
        if self.method == "byol":
            self.predictor = prediction_mlp(m.projector_dim, m.predictor_hidden_dim, m.projector_dim)
            self.target = copy.deepcopy(self.online).requires_grad_(False)

    def forward(self, images: Tensor, random: StepRandom) -> StepOutput:
        """images [b, C, H, W] -> loss; monitor views = the global embeddings (z1, z2) [B, d].

        For BYOL the second view is the target network's embedding of view 2.
        """
        view1, view2 = self.augment(images, random), self.augment(images, random)
        backbone, projector = self.online
        h1, h2 = backbone(view1), backbone(view2)
        z1, z2 = projector(h1), projector(h2)
        if self.method == "byol":
            loss, target2 = self._byol_loss(view1, view2, z1, z2)
            views = (gather_rows(z1.detach()), gather_rows(target2))
        else:
            z1, z2 = gather_rows(z1), gather_rows(z2)
            loss = self._pair_loss(z1, z2)
            views = (z1.detach(), z2.detach())
        return StepOutput(loss=loss, metrics={}, monitor_views=views)

    def _pair_loss(self, z1: Tensor, z2: Tensor) -> Tensor:
        """Symmetric two-branch loss of the contrastive / decorrelation methods on [B, d] embeddings."""
        if self.method == "simclr":
            return info_nce_loss(z1, z2, self.loss_cfg.temperature)
        if self.method == "spectral":
            return spectral_contrastive_loss(z1, z2, self.loss_cfg.spectral_lambda)
        return barlow_twins_loss(z1, z2, self.loss_cfg.barlow_lambda)

    def _byol_loss(self, view1: Tensor, view2: Tensor, z1: Tensor, z2: Tensor) -> tuple[Tensor, Tensor]:
        """BYOL: predictor(z_k) regresses target(view_other); returns (loss, target embedding of view 2)."""
        with torch.no_grad():
            t1, t2 = self.target(view1), self.target(view2)
        loss = byol_loss(self.predictor(z1), t2) + byol_loss(self.predictor(z2), t1)
        return loss, t2

    def encode(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, F] backbone features of the un-augmented input."""
        return self.online[0](images)

    @torch.no_grad()
    def after_step(self, step: int) -> None:
        """BYOL: target <- m * target + (1 - m) * online, m on a cosine schedule towards 1."""
        if self.method == "byol":
            momentum = cosine_momentum(step, self.total_steps, self.loss_cfg.byol_momentum)
            ema_update(self.target, self.online, momentum)
