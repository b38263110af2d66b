"""Geometric augmentations of synthetic batches (`generator.augment`), batch-wise on the device, in
the normalised space.

`shift` is written out here: a translation is one `affine_grid` + `grid_sample`, where kornia's
`RandomAffine` samples and composes a full affine transform (angle, scale, shear, matrix inverses)
around the same `grid_sample`: several times the cost on an 8×8 batch of 64, and 9% of a whole `ours`
step on digits (five shifts a step; experiments/results/digits_tuning.md). It is the same transform:
equal to kornia's for the same translations (tests). The others are kornia's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from datafree.errors import ConfigError


class RandomShift(nn.Module):
    """Translate each sample by its own uniform random fraction of its size, up to ±`fraction` on
    each axis; bilinear, zeros where the shifted image leaves the frame."""

    def __init__(self, fraction: float = 0.125) -> None:
        super().__init__()
        self.fraction = fraction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shift = (torch.rand(len(x), 2, device=x.device) * 2 - 1) * self.fraction  # (x, y), of the size
        return translate(x, shift)


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move the content of sample i by shift[i] = (x, y), in fractions of its width and height."""
    theta = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1
    # affine_grid says where each output pixel reads, in [-1, 1] across the image: content moved by
    # +s of the size is read from −2s
    theta[:, :, 2] = -2 * shift.to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def build_augmentation(names: list[str], input_shape: tuple[int, ...]) -> nn.Module | None:
    """Augmentations by name: shift (±12.5% translation), flip (horizontal), rotate (±15°), crop
    (random resized crop, scale 0.6–1)."""
    if not names:
        return None
    if len(input_shape) != 3:
        raise ConfigError("generator.augment needs image inputs; set generator.augment = [] for feature vectors")
    import kornia.augmentation as K

    available = {
        "shift": lambda: RandomShift(0.125),
        "flip": lambda: K.RandomHorizontalFlip(p=0.5),
        "rotate": lambda: K.RandomRotation(degrees=15.0, p=1.0),
        "crop": lambda: K.RandomResizedCrop(size=tuple(input_shape[-2:]), scale=(0.6, 1.0), p=1.0),
    }
    unknown = [n for n in names if n not in available]
    if unknown:
        raise ConfigError(f"config key 'generator.augment': unknown augmentation {unknown[0]!r} "
                          f"(choose from: {', '.join(available)})")
    return nn.Sequential(*(available[n]() for n in names))
