"""A discriminator over an intermediate feature map, after Wang, Xu, Xu & Tao (AAAI 2018):
the student's features should be indistinguishable from the teacher's.

Features are read through forward hooks (by default the deepest feature map of each network).
When the channel counts differ, a learned 1×1 adapter maps the student's features to the
teacher's width; the adapter trains with the student, so the student (not the discriminator)
decides how its features are presented. Differing spatial sizes are pooled to the smaller.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import ConfigError
from discriminators import Discriminator, register_discriminator


@register_discriminator("feature")
class FeatureDiscriminator(Discriminator):
    """Conv discriminator over an intermediate feature map, with a student-side adapter."""

    uses_features = True

    def __init__(self, num_classes: int, teacher_shape: tuple[int, ...], student_shape: tuple[int, ...],
                 width: int = 64) -> None:
        super().__init__()
        if len(teacher_shape) != 3 or len(student_shape) != 3:
            raise ConfigError("discriminator 'feature' needs convolutional feature maps (C, H, W); "
                              "for feature-vector models use discriminator 'logit'")
        t_channels, s_channels = teacher_shape[0], student_shape[0]
        self.size = (min(teacher_shape[1], student_shape[1]), min(teacher_shape[2], student_shape[2]))
        self.adapter = nn.Conv2d(s_channels, t_channels, 1, bias=False) if s_channels != t_channels else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(t_channels, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
        )

    def view(self, outputs, side: str) -> torch.Tensor:
        f = outputs.feature.float()
        if side == "student":
            f = self.adapter(f)
        return f if tuple(f.shape[-2:]) == self.size else F.adaptive_avg_pool2d(f, self.size)

    def forward(self, view: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(view).squeeze(1)

    def student_side_modules(self) -> list[nn.Module]:
        return [self.adapter]
