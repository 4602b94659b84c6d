"""SimCLR-style random views computed for a whole batch at once, on the batch's device.

One call draws one view per image: random resized crop + horizontal flip (one ``grid_sample``), colour
jitter (brightness, contrast, saturation; no hue), random grayscale (RGB only), then Gaussian blur for
images of 32 px and more or light Gaussian pixel noise for smaller ones. Call it twice for two views.
All randomness comes from torch's global RNG of the batch's device, so a checkpointed RNG state
reproduces the views exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as torchvision's rgb_to_grayscale
BLUR_MIN_SIZE = 32  # smaller images get pixel noise instead of blur (a blur would erase 8x8 digits)


def _uniform(low: float, high: float, batch: int, device: torch.device) -> Tensor:
    """``[batch, 1, 1, 1]`` uniform draws from the device's global generator."""
    return torch.empty(batch, 1, 1, 1, device=device).uniform_(low, high)


def _coin(p: float, batch: int, device: torch.device) -> Tensor:
    """``[batch, 1, 1, 1]`` booleans, True with probability ``p``."""
    return torch.rand(batch, 1, 1, 1, device=device) < p


def luminance(x: Tensor) -> Tensor:
    """``[B, C, H, W]`` -> ``[B, 1, H, W]`` grey level (the image itself when ``C == 1``)."""
    if x.shape[1] == 1:
        return x
    weights = torch.tensor(LUMA_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * weights).sum(dim=1, keepdim=True)


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

    def forward(self, x: Tensor) -> Tensor:
        """One random view per image (see class doc); output dtype follows the input."""
        out = x.float() * self.std + self.mean if self.pixel_space else x.float()
        out = self.crop_and_flip(out)
        out = self.color_jitter(out)
        out = self.grayscale(out)
        out = self.blur(out)
        out = out + self.noise_std * torch.randn_like(out)
        if self.pixel_space:
            out = (out.clamp(0.0, 1.0) - self.mean) / self.std
        return out.to(x.dtype)

    def crop_and_flip(self, x: Tensor) -> Tensor:
        """Crop of area ``U(min_scale, 1)``, aspect log-uniform in ``[3/4, 4/3]``, resized, maybe mirrored."""
        b, device = x.shape[0], x.device
        area = _uniform(self.min_scale, 1.0, b, device).view(b)
        ratio = _uniform(math.log(3 / 4), math.log(4 / 3), b, device).view(b).exp()
        width = (area * ratio).sqrt().clamp(max=1.0)
        height = (area / ratio).sqrt().clamp(max=1.0)
        center_x = (2 * torch.rand(b, device=device) - 1) * (1 - width)
        center_y = (2 * torch.rand(b, device=device) - 1) * (1 - height)
        mirror = torch.rand(b, device=device) < (0.5 if self.flip else 0.0)
        theta = torch.zeros(b, 2, 3, device=device)
        theta[:, 0, 0] = torch.where(mirror, -width, width)
        theta[:, 0, 2] = center_x
        theta[:, 1, 1] = height
        theta[:, 1, 2] = center_y
        grid = F.affine_grid(theta, [b, x.shape[1], self.image_size, self.image_size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

    def color_jitter(self, x: Tensor) -> Tensor:
        """With probability ``jitter_prob``: brightness, contrast, (RGB) saturation factors in ``1 +- s``."""
        b, s, device = x.shape[0], self.jitter_strength, x.device
        out = x * _uniform(1 - s, 1 + s, b, device)
        grey_mean = luminance(out).mean(dim=(1, 2, 3), keepdim=True)
        out = (out - grey_mean) * _uniform(1 - s, 1 + s, b, device) + grey_mean
        if x.shape[1] == 3:
            grey = luminance(out)
            out = (out - grey) * _uniform(1 - s, 1 + s, b, device) + grey
        return torch.where(_coin(self.jitter_prob, b, device), out, x)

    def grayscale(self, x: Tensor) -> Tensor:
        """With probability ``gray_prob`` (0 for single-channel input): replace colour by luminance."""
        if self.gray_prob == 0.0:
            return x
        return torch.where(_coin(self.gray_prob, x.shape[0], x.device), luminance(x).expand_as(x), x)

    def blur(self, x: Tensor) -> Tensor:
        """With probability ``blur_prob``: separable Gaussian blur, sigma ``U(0.1, 2)`` px, width ~S/10."""
        if self.blur_prob == 0.0:
            return x
        b, c, h, w = x.shape
        size = max(3, int(0.1 * self.image_size) // 2 * 2 + 1)
        offsets = torch.arange(size, device=x.device, dtype=x.dtype) - size // 2
        sigma = _uniform(0.1, 2.0, b, x.device).view(b, 1)
        kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
        identity = (offsets == 0).to(x.dtype).expand(b, size)
        blurred = _coin(self.blur_prob, b, x.device).view(b, 1)
        kernel = torch.where(blurred, kernel / kernel.sum(1, keepdim=True), identity)
        weight = kernel.repeat_interleave(c, dim=0)
        pad = size // 2
        out = F.pad(x.reshape(1, b * c, h, w), (pad, pad, pad, pad), mode="reflect")
        out = F.conv2d(out, weight.view(b * c, 1, 1, size), groups=b * c)
        out = F.conv2d(out, weight.view(b * c, 1, size, 1), groups=b * c)
        return out.reshape(b, c, h, w)
