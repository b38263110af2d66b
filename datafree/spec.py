"""`InputSpec`: what a classifier takes, which is all the trainer, the generators, augmentation and
checkpoints need to know about the data. A registered data set is one way to get one; a user
with only a trained model writes one by hand: `InputSpec((3, 32, 32), mean=..., std=...)`.

`mean`/`std` describe the teacher's input normalisation: the teacher sees `(x - mean) / std`.
Generators make samples in that normalised space and augmentation and sample grids undo it. When
they are not given the inputs are taken as they are: generators then work directly in the
teacher's own input space, and test data is fed to the teacher unchanged.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch

from datafree.errors import ConfigError


@dataclass(frozen=True)
class InputSpec:
    input_shape: tuple[int, ...]  # one sample: (C, H, W) for images, (F,) for feature vectors
    num_classes: int | None = None  # None: read from the teacher's output
    mean: tuple[float, ...] | None = None  # per channel for images, per feature (or one value) for vectors
    std: tuple[float, ...] | None = None
    name: str = "custom"  # the data set this describes, if any
    augment: str = "none"  # the data set's standard training augmentation (see data.augment_batch)

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.input_shape)
        object.__setattr__(self, "input_shape", shape)
        if len(shape) not in (1, 3) or any(d <= 0 for d in shape):
            raise ConfigError(f"input shape {shape} must be (features,) or (channels, height, width) of positive sizes")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"num_classes must be at least 2 (got {self.num_classes})")
        if (self.mean is None) != (self.std is None):
            raise ConfigError("give both mean and std of the teacher's input normalisation, or neither")
        if self.mean is not None:
            mean, std = tuple(map(float, self.mean)), tuple(map(float, self.std))
            object.__setattr__(self, "mean", mean)
            object.__setattr__(self, "std", std)
            allowed = {1, self.stats_length}
            if len(mean) not in allowed or len(std) not in allowed:
                raise ConfigError(f"mean and std need 1 or {self.stats_length} values for inputs of shape {shape} "
                                  f"(got {len(mean)} and {len(std)})")
            if not all(math.isfinite(s) and s > 0 for s in std) or not all(math.isfinite(m) for m in mean):
                raise ConfigError(f"std must be positive and mean finite (got mean {mean}, std {std})")

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    @property
    def normalized(self) -> bool:
        return self.mean is not None

    @property
    def stats_length(self) -> int:
        """How many mean/std values a full description has: one per channel, or per feature."""
        return self.input_shape[0] if self.is_image else math.prod(self.input_shape)

    def stats_shape(self, values: tuple[float, ...]) -> tuple[int, ...]:
        if len(values) == 1:
            return (1,) * len(self.input_shape)
        return (len(values), 1, 1) if self.is_image else tuple(self.input_shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device).view(self.stats_shape(self.mean))
        std = torch.tensor(self.std, device=x.device).view(self.stats_shape(self.std))
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(self.stats_shape(self.mean))
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(self.stats_shape(self.std))
        return x * std + mean

    def with_classes(self, num_classes: int) -> "InputSpec":
        return dataclasses.replace(self, num_classes=num_classes)

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape)) + (" images" if self.is_image else " features")
        norm = "normalised with the given mean/std" if self.normalized else "not normalised"
        return f"{shape}, {self.num_classes or '?'} classes, {norm}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        d = dict(d)
        for key in ("mean", "std"):
            d[key] = tuple(d[key]) if d.get(key) is not None else None
        d["input_shape"] = tuple(d["input_shape"])
        return cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})
