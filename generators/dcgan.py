"""The DCGAN-style image generator shared by DFAD, DAFL, DFQ, CMI and Fast, and a conditional variant.

z → Linear → (2·width, H/4, W/4) → BN → 2 × (Upsample ×2 → Conv3×3 → BN → LeakyReLU 0.2) →
Conv3×3 → Sigmoid (pixels in [0, 1]) → the data set's normalisation, so every sample lies in
the range of real normalised images. The conditional variant multiplies z by a learned class
embedding (as in conditional DCGANs), so one generator can be asked for a class.
"""
from __future__ import annotations

import torch
from torch import nn

from datafree.data import DataInfo
from datafree.errors import ConfigError
from generators import Generator, check_noise_size, register_generator


class DCGANGenerator(Generator):
    def __init__(self, info: DataInfo, nz: int = 100, width: int | None = None, conditional: bool = False) -> None:
        super().__init__()
        check_noise_size('dcgan', nz)
        if not info.is_image:
            raise ConfigError(f"generator 'dcgan' makes images; {info.name} has inputs of shape {info.input_shape}: use generator 'mlp'")
        channels, height, width_px = info.input_shape
        if height % 4 or width_px % 4:
            raise ConfigError(f"generator 'dcgan' needs image sides divisible by 4 (got {height}x{width_px})")
        # Capacity comparable to the student's (polo5/ZeroShotKnowledgeTransfer#1): by default
        # twice the image side, i.e. DFAD's 64 at 32×32 and 16 for 8×8 digits.
        width = width or 2 * max(height, width_px)
        self.nz, self.num_classes, self.conditional = nz, info.num_classes, conditional
        self.init_hw = (height // 4, width_px // 4)
        self.register_buffer("mean", torch.tensor(info.mean).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(info.std).view(-1, 1, 1))
        if conditional:
            self.embed = nn.Embedding(info.num_classes, nz)
        self.project = nn.Linear(nz, 2 * width * self.init_hw[0] * self.init_hw[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z * self.embed(labels)
        h = self.project(z).view(z.shape[0], -1, *self.init_hw)
        return (self.body(h) - self.mean) / self.std


@register_generator("dcgan")
def dcgan(info: DataInfo, nz: int = 100, width: int | None = None) -> Generator:
    """DCGAN-style image generator (DFAD/DAFL/DFQ/CMI), output in the normalised input space."""
    return DCGANGenerator(info, nz, width)


@register_generator("dcgan_conditional")
def dcgan_conditional(info: DataInfo, nz: int = 100, width: int | None = None) -> Generator:
    """The DCGAN generator with a class embedding: asked for a class, it makes one."""
    return DCGANGenerator(info, nz, width, conditional=True)
