"""The DCGAN-style image generator shared by DFAD, DAFL, DFQ, CMI and Fast, and a conditional variant.

z → Linear → (2·width, H/4, W/4) → BN → 2 × (Upsample ×2 → Conv3×3 → BN → LeakyReLU 0.2) →
Conv3×3 → Sigmoid (pixels in [0, 1]) → the data set's normalisation, so every sample lies in
the range of real normalised images. Without a normalisation (an `InputSpec` with no mean/std,
i.e. the teacher's own input space, whatever its range) the last layer is instead a BatchNorm
(as DFAD's generator ends): samples start standardised per channel and the generator learns
their scale and offset. The conditional variant multiplies z by a learned class embedding (as in
conditional DCGANs), so one generator can be asked for a class.

Width: by default twice the image side (DFAD's 64 at 32×32, 16 for 8×8 digits), but no more
than the student's size suggests — a generator of comparable capacity to the student
(polo5/ZeroShotKnowledgeTransfer#1); at 32×32 a width-64 generator needs ~3× the FLOPs of a
torchvision ResNet-18. The rule does not look at the teacher's cost: for LeNet-5 → LeNet-5-half
at 1×32×32 it gives 16, 8.1 MFLOPs a sample against the teacher's 0.83, and the mnist5k suite
sets width 8 (2.2 MFLOPs), 26% less time a run for no loss (experiments/results/digits_tuning.md).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.spec import InputSpec
from generators import Generator, check_noise_size, register_generator
from generators.resize_conv import ResizeConvSequential


def default_width(info: InputSpec, reference_parameters: int | None) -> int:
    """Twice the image side, capped by the student's size: sqrt(parameters) / 8, within [8, 64]
    (a ResNet-18 student gets 64, LeNet-5-half 16, digits_cnn_tiny 8)."""
    width = 2 * max(info.input_shape[1:])
    if reference_parameters:
        width = min(width, max(8, min(64, round(math.sqrt(reference_parameters) / 8))))
    return width


class DCGANGenerator(Generator):
    def __init__(self, info: InputSpec, nz: int = 100, width: int | None = None, conditional: bool = False,
                 reference_parameters: int | None = None, output: str = "sigmoid") -> None:
        super().__init__()
        check_noise_size('dcgan', nz)
        if not info.is_image:
            raise ConfigError(f"generator 'dcgan' makes images; {info.name} has inputs of shape {info.input_shape}: "
                              "use generator 'mlp'")
        channels, height, width_px = info.input_shape
        if height % 4 or width_px % 4:
            raise ConfigError(f"generator 'dcgan' needs image sides divisible by 4 (got {height}x{width_px})")
        width = width or default_width(info, reference_parameters)
        if not isinstance(width, int) or width <= 0:
            raise ConfigError(f"config key 'generator.args.width' must be a positive integer (got {width!r})")
        self.nz, self.num_classes, self.conditional = nz, info.num_classes, conditional
        self.init_hw = (height // 4, width_px // 4)
        # "sigmoid": pixels in [0, 1], then the data's normalisation (zju-vipa's DataFree generator).
        # "batchnorm": Tanh, then BatchNorm without affine parameters (DFAD's and DAFL's generators):
        # every batch is standardised per channel, the normalised data's own statistics.
        self.normalized = info.normalized and output == "sigmoid"
        if self.normalized:
            self.register_buffer("mean", torch.tensor(info.mean).view(-1, 1, 1))
            self.register_buffer("std", torch.tensor(info.std).view(-1, 1, 1))
        if conditional:
            self.embed = nn.Embedding(info.num_classes, nz)
        self.project = nn.Linear(nz, 2 * width * self.init_hw[0] * self.init_hw[1])
        # each Upsample → Conv3×3 pair runs as one convolution of the small image (generators/resize_conv.py)
        self.body = ResizeConvSequential(
            nn.BatchNorm2d(2 * width),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Conv2d(width, channels, 3, padding=1),
            *([nn.Sigmoid()] if self.normalized else
              [nn.Tanh(), nn.BatchNorm2d(channels, affine=False)] if output == "batchnorm" else
              [nn.BatchNorm2d(channels)]),
        )

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z * self.embed(labels)
        h = self.project(z).view(z.shape[0], -1, *self.init_hw)
        x = self.body(h)
        return (x - self.mean) / self.std if self.normalized else x


@register_generator("dcgan")
def dcgan(info: InputSpec, nz: int = 100, width: int | None = None, reference_parameters: int | None = None,
          **_: object) -> Generator:
    """DCGAN-style image generator (DFAD/DAFL/DFQ/CMI), output in the normalised input space."""
    return DCGANGenerator(info, nz, width, reference_parameters=reference_parameters)


@register_generator("dcgan_bn")
def dcgan_bn(info: InputSpec, nz: int = 100, width: int | None = None, reference_parameters: int | None = None,
             **_: object) -> Generator:
    """DFAD's and DAFL's generator: the DCGAN body ending in Tanh + BatchNorm (standardised batches)."""
    return DCGANGenerator(info, nz, width, reference_parameters=reference_parameters, output="batchnorm")


@register_generator("dcgan_conditional")
def dcgan_conditional(info: InputSpec, nz: int = 100, width: int | None = None,
                      reference_parameters: int | None = None, **_: object) -> Generator:
    """The DCGAN generator with a class embedding: asked for a class, it makes one."""
    return DCGANGenerator(info, nz, width, conditional=True, reference_parameters=reference_parameters)
