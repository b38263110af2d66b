"""GAN losses on raw discriminator scores (one per sample; real = teacher, fake = student).

Each gives the discriminator's loss, the student's ("generator's") loss, and the score
threshold above which the discriminator calls a sample real (for its accuracy).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from datafree.registry import Registry


@dataclass(frozen=True)
class GanLoss:
    discriminator: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator: Callable[[torch.Tensor], torch.Tensor]
    threshold: float


GAN_LOSSES: Registry[GanLoss] = Registry("GAN loss")

# Non-saturating (Goodfellow et al. 2014): D maximises log σ(real) + log(1 − σ(fake));
# the student maximises log σ(fake) rather than minimising log(1 − σ(fake)), which saturates early.
GAN_LOSSES.add("bce", GanLoss(
    discriminator=lambda real, fake: F.softplus(-real).mean() + F.softplus(fake).mean(),
    generator=lambda fake: F.softplus(-fake).mean(),
    threshold=0.0,
))

# Least squares (Mao et al. 2017): targets 1 for real, 0 for fake.
GAN_LOSSES.add("lsgan", GanLoss(
    discriminator=lambda real, fake: 0.5 * ((real - 1).pow(2).mean() + fake.pow(2).mean()),
    generator=lambda fake: 0.5 * (fake - 1).pow(2).mean(),
    threshold=0.5,
))

# Hinge (Lim & Ye 2017; Miyato et al. 2018).
GAN_LOSSES.add("hinge", GanLoss(
    discriminator=lambda real, fake: F.relu(1 - real).mean() + F.relu(1 + fake).mean(),
    generator=lambda fake: -fake.mean(),
    threshold=0.0,
))
