"""Vision Transformer encoder with random patch masking (the MAE / M-MAE backbone, paper §4.3).

Images become a grid of ``N = (img_size / patch_size)**2`` patch tokens, each with a fixed 2-D sin-cos
position embedding, plus one learned CLS token. ``forward_masked`` keeps a random subset of the patch
tokens (MAE's masking); ``forward_features`` sees every patch and returns the CLS token, the
representation probes and evaluation use.
"""

from __future__ import annotations

import torch
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block
from torch import Tensor, nn

# name -> (embed_dim, depth, num_heads), the standard ViT widths (Dosovitskiy et al.; DeiT for tiny/small).
VIT_PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (192, 12, 3),
    "small": (384, 12, 6),
    "base": (768, 12, 12),
    "large": (1024, 24, 16),
}


def sincos_pos_embed_2d(embed_dim: int, grid_size: int) -> Tensor:
    """Fixed 2-D sin-cos position embedding, ``[grid_size**2, embed_dim]`` in row-major token order.

    The first half of the channels encodes the column, the second half the row, each with the 1-D
    transformer embedding ``[sin(pos * w_k), cos(pos * w_k)]``, ``w_k = 10000**(-k / (embed_dim / 4))``.
    """
    if embed_dim % 4:
        raise ValueError(f"embed_dim must be divisible by 4 for a 2-D sin-cos embedding, got {embed_dim}")
    quarter = embed_dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def axis(pos: Tensor) -> Tensor:
        angles = pos.reshape(-1, 1) * omega.reshape(1, -1)
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    return torch.cat([axis(cols), axis(rows)], dim=1).float()


def with_cls_slot(pos_embed: Tensor) -> Tensor:
    """``[N, D]`` patch position embedding -> ``[1, 1 + N, D]`` with a zero row for the CLS token."""
    return torch.cat([pos_embed.new_zeros(1, pos_embed.shape[1]), pos_embed], dim=0).unsqueeze(0)


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """Visible patches: ``round(N * (1 - ratio))``, clipped so at least one is kept and one hidden."""
    return max(1, min(round(num_patches * (1.0 - mask_ratio)), num_patches - 1))


def random_masking(tokens: Tensor, mask_ratio: float, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a uniformly random subset of tokens per sample (MAE's per-sample shuffle).

    tokens: ``[B, N, D]``; noise: ``[B, N]`` i.i.d. uniform draws, one per token (the tokens with the
    smallest noise are kept, as in facebookresearch/mae). Returns ``kept [B, K, D]`` with
    ``K = num_kept(N, mask_ratio)``, ``mask [B, N]`` (float, 1 = hidden, in the original token order)
    and ``ids_restore [B, N]``, the inverse permutation: ``shuffled.gather(1, ids_restore)`` puts
    tokens back in place.
    """
    batch, length, dim = tokens.shape
    if noise.shape != (batch, length):
        raise ValueError(f"noise must be [B, N] = {[batch, length]}, got {list(noise.shape)}")
    keep = num_kept(length, mask_ratio)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    kept = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, length, device=tokens.device)
    mask[:, :keep] = 0.0
    return kept, mask.gather(1, ids_restore), ids_restore


def init_transformer_weights(module: nn.Module) -> None:
    """MAE's initialisation: xavier-uniform linear layers with zero bias, unit LayerNorms."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ViTEncoder(nn.Module):
    """ViT encoder: patch embedding + fixed sin-cos positions + CLS token + timm ``Block`` stack + LayerNorm.

    Square images ``[B, in_chans, img_size, img_size]``; ``patch_size`` must divide ``img_size``.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        in_chans: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide img_size {img_size}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} must be divisible by num_heads {num_heads}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.embed_dim = embed_dim
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        pos = with_cls_slot(sincos_pos_embed_2d(embed_dim, self.grid_size))
        self.register_buffer("pos_embed", pos, persistent=False)
        self.blocks = nn.Sequential(
            *(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth))
        )
        self.norm = nn.LayerNorm(embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        self.apply(init_transformer_weights)
        proj = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(proj.view(proj.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)

    def embed_patches(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> patch tokens with positions ``[B, N, D]``."""
        return self.patch_embed(x) + self.pos_embed[:, 1:]

    def prepend_cls(self, tokens: Tensor) -> Tensor:
        """``[B, T, D]`` -> ``[B, 1 + T, D]`` with the (position-embedded) CLS token first."""
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def transform(self, tokens: Tensor) -> Tensor:
        """Transformer blocks then the final LayerNorm, ``[B, T, D]`` -> ``[B, T, D]``."""
        return self.norm(self.blocks(tokens))

    def forward_masked(self, x: Tensor, mask_ratio: float, noise: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Encode the visible patches only.

        x: ``[B, C, H, W]``; noise: ``[B, N]`` uniform, which patches stay visible (see ``random_masking``).
        Returns ``tokens [B, 1 + K, D]`` (CLS first), ``mask [B, N]`` (1 = hidden) and ``ids_restore [B, N]``.
        """
        visible, mask, ids_restore = random_masking(self.embed_patches(x), mask_ratio, noise)
        return self.transform(self.prepend_cls(visible)), mask, ids_restore

    def forward_features(self, x: Tensor) -> Tensor:
        """Unmasked representation: the CLS token after the final norm, ``[B, C, H, W]`` -> ``[B, D]``."""
        return self.transform(self.prepend_cls(self.embed_patches(x)))[:, 0]

    def forward(self, x: Tensor) -> Tensor:
        """Same as ``forward_features`` so the encoder is a plain image -> ``[B, D]`` backbone."""
        return self.forward_features(x)
