"""What one update of one player sees: its inputs and, computed lazily and at most once, the
forward passes that its loss terms ask for. Every term reads `b.teacher.logits`,
`b.student.logits`, ... from here, so a batch costs one teacher forward however many terms use it.

Gradients flow where the updating player needs them and nowhere else: through the teacher only
for the generator (into its samples), through the student for the generator and the student,
and never through either for the discriminator.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from datafree.hooks import Outputs, Probe


@dataclass
class Nets:
    """The networks as the updating player must call them (DDP wrappers only for that player)."""

    teacher: Probe
    student: Probe
    discriminator: nn.Module | None = None
    gan_loss: object | None = None  # a discriminators.losses.GanLoss

    def view(self, outputs: Outputs, side: str) -> torch.Tensor:
        """What the discriminator looks at in one network's outputs. A DDP wrapper only forwards
        `forward`, so `view` is read from the wrapped module."""
        return getattr(self.discriminator, "module", self.discriminator).view(outputs, side)


class Batch:
    def __init__(self, player: str, x: torch.Tensor, nets: Nets, captures: dict[str, set[str]],
                 temperature: float, labels: torch.Tensor | None = None,
                 sampled_labels: torch.Tensor | None = None) -> None:
        self.player = player
        self.x = x
        self.nets = nets
        self.captures = captures
        self.temperature = temperature
        self.given_labels = labels  # real labels; None for synthetic batches
        self.sampled_labels = sampled_labels  # classes a conditional generator was asked for
        self.diagnostics: dict[str, torch.Tensor] = {}  # extra scalars a term wants logged
        self.source = x  # the samples before augmentation (terms that make views of their own read them)

    @cached_property
    def teacher(self) -> Outputs:
        with torch.set_grad_enabled(self.player == "generator"):
            return self.nets.teacher(self.x, self.captures["teacher"])

    @cached_property
    def student(self) -> Outputs:
        with torch.set_grad_enabled(self.player != "discriminator"):
            return self.nets.student(self.x, self.captures["student"])

    @cached_property
    def labels(self) -> torch.Tensor:
        """Real labels when there are any, else the teacher's decision."""
        if self.given_labels is not None:
            return self.given_labels
        return self.teacher.logits.detach().argmax(1)
