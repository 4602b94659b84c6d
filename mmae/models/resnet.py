"""ResNet-18 with the CIFAR stem used by SimCLR/BYOL/Barlow Twins reference code (e.g. solo-learn).

The ImageNet stem (7x7 stride-2 convolution + max-pool) would shrink a 32x32 image to 8x8 before the
first residual stage; the CIFAR variant uses a 3x3 stride-1 convolution and no max-pool.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18

RESNET18_FEATURE_DIM = 512


def cifar_resnet18(in_chans: int) -> nn.Module:
    """Backbone mapping ``[B, in_chans, H, W]`` -> ``[B, 512]`` (global-average-pooled, no classifier).

    Works for any ``H, W >= 1``; the three stride-2 stages reduce a 32x32 input to 4x4 before pooling.
    """
    net = resnet18(weights=None)
    net.conv1 = nn.Conv2d(in_chans, 64, kernel_size=3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net
