"""Registered discriminators for GAN-KD: architectures only, no training logic.

A discriminator scores one network's answer on a batch: "real" = the teacher's, "fake" = the
student's. `view(outputs, side)` picks what it looks at from a `datafree.hooks.Outputs`
(softened probabilities, or a feature map), `forward(view, labels)` returns one score per sample.
Classes are registered; each says whether it reads features (`uses_features`) so the trainer
installs the feature hooks, and takes `(num_classes, teacher_shape, student_shape, **args)`,
the shapes being those of its teacher and student views.
"""
from __future__ import annotations

import torch
from torch import nn

from datafree.registry import Registry

DISCRIMINATORS: Registry[type["Discriminator"]] = Registry("discriminator")
register_discriminator = DISCRIMINATORS.register


class Discriminator(nn.Module):
    uses_features = False

    def view(self, outputs, side: str) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, view: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def student_side_modules(self) -> list[nn.Module]:
        """Modules trained with the student, not the discriminator (e.g. a feature adapter)."""
        return []


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) on every Linear, Conv2d and Embedding (the projection)
    layer: a Lipschitz bound that keeps the discriminator from overpowering the student."""
    for name, child in module.named_children():
        if isinstance(child, (nn.Linear, nn.Conv2d, nn.Embedding)):
            setattr(module, name, nn.utils.parametrizations.spectral_norm(child))
        else:
            apply_spectral_norm(child)
    return module


from discriminators import feature, logit  # noqa: E402,F401  (registers them)
