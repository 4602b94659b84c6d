"""SimCLR-style random views computed for a whole batch at once, on the batch's device.

One call draws one view per image: random resized crop + horizontal flip (one ``grid_sample``), colour
jitter (brightness, contrast, saturation; no hue), random grayscale (RGB only), then Gaussian blur for
images of 32 px and more or light Gaussian pixel noise for smaller ones. Call it twice for two views.
All randomness comes from the step's ``StepRandom``: the draws are made for the whole global batch and
cut to this rank's rows, so a sample gets the same view at any world size, and a resumed run repeats
the views of an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmae.data.global_batch import StepRandom

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
BLUR_MIN_SIZE = 32  # smaller images get pixel noise instead of blur (a blur would erase 8x8 digits)
PER_IMAGE = (1, 1, 1)  # trailing shape of one draw per image, broadcasting over [C, H, W]


def luminance(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, 1, H, W]`` grey level (the image itself when ``C == 1``).

    Weights are Python floats, so no tensor is copied from the host on each call.
    """
    if x.shape[1] == 1:
        return x
    red, green, blue = LUMA_WEIGHTS
    return red * x[:, 0:1] + green * x[:, 1:2] + blue * x[:, 2:3]


class SimCLRAugment(nn.Module):
    """Random view of a batch ``[B, channels, H, W]`` -> ``[B, channels, image_size, image_size]``.

    Give the dataset's ``mean``/``std`` when the input is normalised: views are then made in [0, 1] pixel
    space (clamped there) and normalised again. ``blur_prob``/``noise_std`` default by image size (see
    module doc).
    """

    def __init__(
        self,
        image_size: int,
        channels: int,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        min_scale: float = 0.2,
        flip: bool = True,
        jitter_strength: float = 0.4,
        jitter_prob: float = 0.8,
        gray_prob: float = 0.2,
        blur_prob: float | None = None,
        noise_std: float | None = None,
    ) -> None:
        super().__init__()
        self.image_size = image_size
        self.channels = channels
        self.min_scale = min_scale
        self.flip = flip
        self.jitter_strength = jitter_strength
        self.jitter_prob = jitter_prob
        self.gray_prob = gray_prob if channels == 3 else 0.0
        large = image_size >= BLUR_MIN_SIZE
        self.blur_prob = blur_prob if blur_prob is not None else (0.5 if large else 0.0)
        self.noise_std = noise_std if noise_std is not None else (0.0 if large else 0.05)
        self.pixel_space = mean is not None and std is not None
        if self.pixel_space:
            self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor, random: StepRandom) -> Tensor:
        """One random view per image of ``x: [b, C, H, W]``, ``random``'s rows (see class doc).

        Output ``[b, C, image_size, image_size]``, dtype of the input.
        """
        out = x.float() * self.std + self.mean if self.pixel_space else x.float()
        out = self.crop_and_flip(out, random)
        out = self.color_jitter(out, random)
        out = self.grayscale(out, random)
        out = self.blur(out, random)
        if self.noise_std:
            out = out + self.noise_std * random.normal(*out.shape[1:])
        if self.pixel_space:
            out = (out.clamp(0.0, 1.0) - self.mean) / self.std
        return out.to(x.dtype)

    def crop_and_flip(self, x: Tensor, random: StepRandom) -> Tensor:
        """Crop of area ``U(min_scale, 1)``, aspect log-uniform in ``[3/4, 4/3]``, resized, maybe mirrored."""
        b = x.shape[0]
        area = random.uniform(self.min_scale, 1.0)
        ratio = random.uniform(math.log(3 / 4), math.log(4 / 3)).exp()
        width = (area * ratio).sqrt().clamp(max=1.0)
        height = (area / ratio).sqrt().clamp(max=1.0)
        center_x = (2 * random.rand() - 1) * (1 - width)
        center_y = (2 * random.rand() - 1) * (1 - height)
        mirror = random.coin(0.5 if self.flip else 0.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0] = torch.where(mirror, -width, width)
        theta[:, 0, 2] = center_x
        theta[:, 1, 1] = height
        theta[:, 1, 2] = center_y
        grid = F.affine_grid(theta, [b, x.shape[1], self.image_size, self.image_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def color_jitter(self, x: Tensor, random: StepRandom) -> Tensor:
        """With probability ``jitter_prob``: brightness, contrast, (RGB) saturation factors in ``1 +- s``."""
        s = self.jitter_strength
        out = x * random.uniform(1 - s, 1 + s, *PER_IMAGE)
        grey_mean = luminance(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (out - grey_mean) * random.uniform(1 - s, 1 + s, *PER_IMAGE) + grey_mean
        if x.shape[1] == 3:
            grey = luminance(out)
            out = (out - grey) * random.uniform(1 - s, 1 + s, *PER_IMAGE) + grey
        return torch.where(random.coin(self.jitter_prob, *PER_IMAGE), out, x)

    def grayscale(self, x: Tensor, random: StepRandom) -> Tensor:
        """With probability ``gray_prob`` (0 for single-channel input): replace colour by luminance."""
        if self.gray_prob == 0.0:
            return x
        return torch.where(random.coin(self.gray_prob, *PER_IMAGE), luminance(x).expand_as(x), x)

    def blur(self, x: Tensor, random: StepRandom) -> Tensor:
        """With probability ``blur_prob``: separable Gaussian blur, sigma ``U(0.1, 2)`` px, width ~S/10."""
        if self.blur_prob == 0.0:
            return x
        b, c, h, w = x.shape
        size = max(3, int(0.1 * self.image_size) // 2 * 2 + 1)
        offsets = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        sigma = random.uniform(0.1, 2.0, 1)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        identity = (offsets == 0).to(x.dtype).expand(b, size)
        blurred = random.coin(self.blur_prob, 1)
        kernel = torch.where(blurred, kernel / kernel.sum(1, keepdim=True), identity)
        weight = kernel.repeat_interleave(c, dim=0)
        pad = size // 2
        out = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
        out = F.conv2d(out, weight.view(b * c, 1, 1, size), groups=b * c)
        out = F.conv2d(out, weight.view(b * c, 1, size, 1), groups=b * c)
        return out.reshape(b, c, h, w)
