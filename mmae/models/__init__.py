"""Networks: ViT encoder, masked autoencoder, CIFAR ResNet-18, MLP heads, global-batch BatchNorm, builders."""

from mmae.models.builders import build_backbone, build_mae, build_vit
from mmae.models.global_batchnorm import GlobalBatchNorm, local_statistics, to_global_batchnorm
from mmae.models.heads import prediction_mlp, projection_mlp
from mmae.models.mae import MAEOutput, MaskedAutoencoder
from mmae.models.resnet import RESNET18_FEATURE_DIM, cifar_resnet18
from mmae.models.vit import VIT_PRESETS, ViTEncoder, random_masking, sincos_pos_embed_2d

__all__ = [
    "RESNET18_FEATURE_DIM",
    "VIT_PRESETS",
    "GlobalBatchNorm",
    "MAEOutput",
    "MaskedAutoencoder",
    "ViTEncoder",
    "build_backbone",
    "build_mae",
    "build_vit",
    "cifar_resnet18",
    "local_statistics",
    "prediction_mlp",
    "projection_mlp",
    "random_masking",
    "sincos_pos_embed_2d",
    "to_global_batchnorm",
]
