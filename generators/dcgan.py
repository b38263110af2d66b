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
(polo5/ZeroShotKnowledgeTransfer#1) — and no more than the networks it serves cost: its forward
takes at most the FLOPs of the teacher's and the student's together (never below width 8). At
32×32 a width-64 generator needs ~3× the FLOPs of a torchvision ResNet-18; for LeNet-5 →
LeNet-5-half at 1×32×32 the parameter rule alone gave 16, 8.1 MFLOPs a sample against the two
LeNets' 1.1, where width 8 (2.2 MFLOPs) trained at least as well in 26% less time a run
(experiments/results/digits_tuning.md). The run writes the width it chose into its config
(`generator.args.width`), so its resume builds this generator even if the rule changes.
"""
from __future__ import annotations

import bisect
import math
from typing import Any

import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.models import count_flops
from datafree.spec import InputSpec
from generators import Generator, check_noise_size, register_generator
from generators.resize_conv import ResizeConvSequential


def default_width(info: InputSpec, nz: int, reference_parameters: int | None = None,
                  reference_flops: int | None = None) -> int:
    """Twice the image side, capped by the student's size: sqrt(parameters) / 8, within [8, 64] (a ResNet-18
    student gets 64, LeNet-5-half 16, digits_cnn_tiny 8); then the widest generator whose forward costs at
    most `reference_flops` a sample (the teacher's and the student's forward together), at least 8."""
    width = 2 * max(info.input_shape[1:])
    if reference_parameters:
        width = min(width, max(8, min(64, round(math.sqrt(reference_parameters) / 8))))
    if reference_flops:
        widths = range(8, width + 1)
        def generator_flops(w: int) -> int:
            with torch.device("meta"):  # no memory, and no draw from the random stream the run is seeded with
                return count_flops(DCGANGenerator(info, nz, w), (nz,))
        fitting = bisect.bisect_right(widths, reference_flops, key=generator_flops)  # FLOPs grow with the width
        width = widths[max(fitting - 1, 0)]
    return width


class DCGANGenerator(Generator):
    def __init__(self, info: InputSpec, nz: int = 100, width: int | None = None, conditional: bool = False,
                 reference_parameters: int | None = None, reference_flops: int | None = None,
                 output: str = "sigmoid") -> None:
        super().__init__()
        check_noise_size('dcgan', nz)
        if not info.is_image:
            raise ConfigError(f"generator 'dcgan' makes images; {info.name} has inputs of shape {info.input_shape}: "
                              "use generator 'mlp'")
        channels, height, width_px = info.input_shape
        if height % 4 or width_px % 4:
            raise ConfigError(f"generator 'dcgan' needs image sides divisible by 4 (got {height}x{width_px})")
        self.chosen = {"width": default_width(info, nz, reference_parameters, reference_flops)} if width is None else {}
        width = self.chosen.get("width", width)
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

    def chosen_args(self) -> dict[str, Any]:
        return dict(self.chosen)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z * self.embed(labels)
        h = self.project(z).view(z.shape[0], -1, *self.init_hw)
        x = self.body(h)
        return (x - self.mean) / self.std if self.normalized else x


@register_generator("dcgan")
def dcgan(info: InputSpec, nz: int = 100, width: int | None = None, reference_parameters: int | None = None,
          reference_flops: int | None = None, **_: object) -> Generator:
    """DCGAN-style image generator (DFAD/DAFL/DFQ/CMI), output in the normalised input space."""
    return DCGANGenerator(info, nz, width, reference_parameters=reference_parameters, reference_flops=reference_flops)


@register_generator("dcgan_bn")
def dcgan_bn(info: InputSpec, nz: int = 100, width: int | None = None, reference_parameters: int | None = None,
             reference_flops: int | None = None, **_: object) -> Generator:
    """DFAD's and DAFL's generator: the DCGAN body ending in Tanh + BatchNorm (standardised batches)."""
    return DCGANGenerator(info, nz, width, reference_parameters=reference_parameters, reference_flops=reference_flops,
                          output="batchnorm")


@register_generator("dcgan_conditional")
def dcgan_conditional(info: InputSpec, nz: int = 100, width: int | None = None, reference_parameters: int | None = None,
                      reference_flops: int | None = None, **_: object) -> Generator:
    """The DCGAN generator with a class embedding: asked for a class, it makes one."""
    return DCGANGenerator(info, nz, width, conditional=True, reference_parameters=reference_parameters,
                          reference_flops=reference_flops)
