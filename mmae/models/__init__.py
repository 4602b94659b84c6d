"""Networks: ViT encoder, masked autoencoder, CIFAR ResNet-18, MLP heads, and builders from a ModelConfig."""

from mmae.models.heads import prediction_mlp, projection_mlp
from mmae.models.mae import MAEOutput, MaskedAutoencoder
from mmae.models.registry import build_backbone, build_mae, build_vit
from mmae.models.resnet import RESNET18_FEATURE_DIM, cifar_resnet18
from mmae.models.vit import VIT_PRESETS, ViTEncoder, random_masking, sincos_pos_embed_2d

__all__ = [
    "RESNET18_FEATURE_DIM",
    "VIT_PRESETS",
    "MAEOutput",
    "MaskedAutoencoder",
    "ViTEncoder",
    "build_backbone",
    "build_mae",
    "build_vit",
    "cifar_resnet18",
    "prediction_mlp",
    "projection_mlp",
    "random_masking",
    "sincos_pos_embed_2d",
]
