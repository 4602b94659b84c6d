"""Build the networks a ``ModelConfig`` names, at the image geometry of the dataset."""

from __future__ import annotations

from torch import nn

from mmae.config import ModelConfig
from mmae.models.mae import MaskedAutoencoder
from mmae.models.resnet import RESNET18_FEATURE_DIM, cifar_resnet18
from mmae.models.vit import VIT_PRESETS, ViTEncoder


def build_vit(model_cfg: ModelConfig, image_size: int, in_chans: int) -> ViTEncoder:
    """ViT of the preset ``model_cfg.size``; ``model_cfg.depth`` (when set) overrides the preset's depth."""
    embed_dim, preset_depth, num_heads = VIT_PRESETS[model_cfg.size]
    return ViTEncoder(
        img_size=image_size,
        patch_size=model_cfg.patch_size,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=model_cfg.depth or preset_depth,
        num_heads=num_heads,
    )


def build_backbone(model_cfg: ModelConfig, image_size: int, in_chans: int) -> tuple[nn.Module, int]:
    """Backbone for Siamese methods: ``(module mapping [B, C, H, W] -> [B, F], F)``.

    ``vit``: a ``ViTEncoder`` whose ``forward`` is ``forward_features`` (CLS token, no masking).
    ``resnet18``: the CIFAR-stem ResNet-18, ``F = 512``.
    """
    if model_cfg.arch == "resnet18":
        return cifar_resnet18(in_chans), RESNET18_FEATURE_DIM
    encoder = build_vit(model_cfg, image_size, in_chans)
    return encoder, encoder.embed_dim


def build_mae(model_cfg: ModelConfig, image_size: int, in_chans: int) -> MaskedAutoencoder:
    """Masked autoencoder: ``build_vit`` encoder + the configured decoder (needs ``arch='vit'``)."""
    if model_cfg.arch != "vit":
        raise ValueError(f"masked autoencoders need model.arch 'vit', got '{model_cfg.arch}'")
    return MaskedAutoencoder(
        build_vit(model_cfg, image_size, in_chans),
        decoder_dim=model_cfg.decoder_dim,
        decoder_depth=model_cfg.decoder_depth,
        decoder_heads=model_cfg.decoder_heads,
    )
