"""MAE, U-MAE and M-MAE: one masked autoencoder, three losses.

- MAE (He et al., 2022): L_MAE, mean squared error on the masked patches.
- U-MAE (Zhang et al., 2022b; paper §3.3): L_MAE + gamma * sum_{i!=j} (z_i^T z_j)^2 with
  gamma = ``loss.uniformity_lambda`` / B^2, B the global batch (see ``mmae.losses.umae``).
- M-MAE (paper Eq. 11): L_MAE - lambda * TCR_mu(Z), Z the l2-normalised CLS tokens of the
  *masked* forward pass; TCR is computed in float32/64 outside autocast by ``tcr_regularizer``.

Both regularisers see the CLS tokens of the whole global batch, gathered over ranks with their
gradient, so their weights mean the same at every world size (run tag ``tcr_gather`` /
``uniformity_gather``: "global-batch,full-gradient").
"""

from __future__ import annotations

from torch import Tensor

from mmae.config import TrainConfig
from mmae.data import StepRandom
from mmae.distributed import gather_rows
from mmae.losses import mae_loss, tcr_regularizer, uniformity_penalty
from mmae.models import build_mae
from mmae.objectives.base import Objective, StepOutput


class MaskedObjective(Objective):
    """Masked-image-modelling objective for ``method`` in {"mae", "umae", "mmae"}."""

    def __init__(self, config: TrainConfig, in_chans: int, image_size: int) -> None:
        super().__init__()
        self.method = config.method
        self.loss_cfg = config.loss
        self.mask_ratio = config.model.mask_ratio
        self.norm_pix = config.model.norm_pix_loss
        self.mae = build_mae(config.model, image_size, in_chans)
        self.feature_dim = self.monitor_dim = self.mae.encoder.embed_dim

    def forward(self, images: Tensor, random: StepRandom) -> StepOutput:
        """images [b, C, H, W] -> loss; the monitor view is the global masked-pass CLS [B, D].

        The reconstruction term is this rank's mean over its masked patches; the regulariser is the
        global batch's, identical on every rank.
        """
        out = self.mae(images, self.mask_ratio, random.rand(self.mae.encoder.num_patches))
        reconstruction = mae_loss(out.pred, out.target, out.mask, self.norm_pix)
        metrics = {"train/mae_loss": reconstruction.detach()}
        loss = reconstruction
        cls = gather_rows(out.cls)
        if self.method == "umae":
            uniformity = uniformity_penalty(cls)
            loss = loss + self.loss_cfg.uniformity_lambda / cls.shape[0] ** 2 * uniformity
            metrics["train/uniformity"] = uniformity.detach()
        elif self.method == "mmae":
            tcr = tcr_regularizer(cls, self.loss_cfg.mu, self.loss_cfg.mu_convention)
            loss = loss - self.loss_cfg.tcr_lambda * tcr
            metrics["train/tcr"] = tcr.detach()
        cls = cls.detach()
        return StepOutput(loss=loss, metrics=metrics, monitor_views=(cls,))

    def encode(self, images: Tensor) -> Tensor:
        """[B, C, H, W] -> [B, D]: CLS token of the unmasked input after the encoder's final norm."""
        return self.mae.encoder.forward_features(images)
