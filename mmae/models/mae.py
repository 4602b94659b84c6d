"""Masked autoencoder (He et al., 2022): ViT encoder on visible patches, light decoder predicting all pixels.

The loss itself lives in ``mmae.losses`` (MSE on hidden patches, paper Eq. 10); M-MAE and U-MAE add a
regulariser on ``MAEOutput.cls``, the CLS token of the masked pass (paper Eq. 11).
Patch vectors are laid out ``(row within patch, column within patch, channel)``, as in MAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from mmae.models.vit import ViTEncoder, init_transformer_weights, sincos_pos_embed_2d, with_cls_slot


@dataclass(frozen=True)
class MAEOutput:
    """One masked forward pass. ``P = patch_size**2 * in_chans``."""

    pred: Tensor  # [B, N, P] predicted pixels of every patch
    target: Tensor  # [B, N, P] the raw (un-normalised per patch) input patches
    mask: Tensor  # [B, N] float, 1 = hidden from the encoder
    cls: Tensor  # [B, D] encoder CLS token of the masked pass (after the final norm)


class MaskedAutoencoder(nn.Module):
    """Encoder (a ``ViTEncoder``) + transformer decoder with its own width, depth and heads."""

    def __init__(
        self,
        encoder: ViTEncoder,
        decoder_dim: int,
        decoder_depth: int,
        decoder_heads: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim {decoder_dim} must be divisible by decoder_heads {decoder_heads}")
        self.encoder = encoder
        self.patch_size = encoder.patch_size
        self.in_chans = encoder.in_chans
        self.grid_size = encoder.grid_size
        self.patch_dim = encoder.patch_size**2 * encoder.in_chans

        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        pos = with_cls_slot(sincos_pos_embed_2d(decoder_dim, encoder.grid_size))
        self.register_buffer("decoder_pos_embed", pos, persistent=False)
        self.decoder_blocks = nn.Sequential(
            *(
                Block(decoder_dim, decoder_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
                for _ in range(decoder_depth)
            )
        )
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch_dim)
        self._init_decoder()

    def _init_decoder(self) -> None:
        for module in (self.decoder_embed, self.decoder_blocks, self.decoder_norm, self.decoder_pred):
            module.apply(init_transformer_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def patchify(self, imgs: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, N, p*p*C]`` in the encoder's row-major token order."""
        b, c, p, g = imgs.shape[0], self.in_chans, self.patch_size, self.grid_size
        patches = imgs.reshape(b, c, g, p, g, p).permute(0, 2, 4, 3, 5, 1)
        return patches.reshape(b, g * g, p * p * c)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """Inverse of ``patchify``: ``[B, N, p*p*C]`` -> ``[B, C, H, W]``."""
        b, c, p, g = patches.shape[0], self.in_chans, self.patch_size, self.grid_size
        imgs = patches.reshape(b, g, g, p, p, c).permute(0, 5, 1, 3, 2, 4)
        return imgs.reshape(b, c, g * p, g * p)

    def encode(self, imgs: Tensor, mask_ratio: float, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Stage 1, ``ViTEncoder.forward_masked``: ``latent [B, 1+K, D], mask [B, N], ids_restore [B, N]``."""
        return self.encoder.forward_masked(imgs, mask_ratio, noise)

    def fill_mask_tokens(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """``[B, 1+K, Dd]`` visible tokens -> ``[B, 1+N, Dd]``: mask tokens appended, then unshuffled."""
        cls, visible = tokens[:, :1], tokens[:, 1:]
        batch, num_patches = ids_restore.shape
        hidden = self.mask_token.expand(batch, num_patches - visible.shape[1], -1)
        shuffled = torch.cat([visible, hidden], dim=1)
        index = ids_restore.unsqueeze(-1).expand(-1, -1, shuffled.shape[2])
        return torch.cat([cls, shuffled.gather(1, index)], dim=1)

    def decode(self, latent: Tensor, ids_restore: Tensor) -> Tensor:
        """Stage 2: encoder tokens ``[B, 1+K, D]`` -> predicted pixels of every patch ``[B, N, P]``."""
        tokens = self.fill_mask_tokens(self.decoder_embed(latent), ids_restore)
        tokens = self.decoder_blocks(tokens + self.decoder_pos_embed)
        return self.decoder_pred(self.decoder_norm(tokens))[:, 1:]

    def forward(self, imgs: Tensor, mask_ratio: float, noise: Tensor) -> MAEOutput:
        """``[B, C, H, W]`` -> ``MAEOutput`` (encode visible patches, decode all, keep the masked CLS).

        noise: ``[B, N]`` uniform draws choosing the visible patches (``random_masking``).
        """
        latent, mask, ids_restore = self.encode(imgs, mask_ratio, noise)
        pred = self.decode(latent, ids_restore)
        return MAEOutput(pred=pred, target=self.patchify(imgs), mask=mask, cls=latent[:, 0])
