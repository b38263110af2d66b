"""Discriminators over a network's class outputs.

`logit`: an MLP over softened probabilities softmax(z/T) (after MEAL-V2's 1000→125→15→1
discriminator; here hidden widths `hidden`, by default 128 and 64 whatever the number of
classes). `conditional`: the same trunk with a projection on the label (Miyato & Koyama 2018),
after Xu, Hsu & Huang 2018's conditional adversarial networks: the discriminator judges whether
an answer is the teacher's *for this class*.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from discriminators import Discriminator, register_discriminator


def mlp_trunk(num_inputs: int, hidden: list[int]) -> tuple[nn.Sequential, int]:
    layers: list[nn.Module] = []
    width = num_inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.LeakyReLU(0.2)]
        width = h
    return nn.Sequential(*layers), width


@register_discriminator("logit")
class LogitDiscriminator(Discriminator):
    """MLP over softened class probabilities (student vs teacher answers)."""

    def __init__(self, num_classes: int, teacher_shape=None, student_shape=None,
                 hidden: list[int] | tuple[int, ...] = (128, 64), temperature: float = 1.0,
                 use_probs: bool = True) -> None:
        super().__init__()
        self.temperature, self.use_probs = temperature, use_probs
        self.trunk, width = mlp_trunk(num_classes, list(hidden))
        self.head = nn.Linear(width, 1)

    def view(self, outputs, side: str) -> torch.Tensor:
        logits = outputs.logits.float()
        return F.softmax(logits / self.temperature, 1) if self.use_probs else logits

    def forward(self, view: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(view)).squeeze(1)


@register_discriminator("conditional")
class ConditionalDiscriminator(LogitDiscriminator):
    """Logit discriminator with a projection on the class label."""

    def __init__(self, num_classes: int, teacher_shape=None, student_shape=None,
                 hidden: list[int] | tuple[int, ...] = (128, 64), temperature: float = 1.0,
                 use_probs: bool = True) -> None:
        super().__init__(num_classes, teacher_shape, student_shape, hidden, temperature, use_probs)
        self.embed = nn.Embedding(num_classes, self.head.in_features)

    def forward(self, view: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        h = self.trunk(view)
        return self.head(h).squeeze(1) + (self.embed(labels) * h).sum(1)
