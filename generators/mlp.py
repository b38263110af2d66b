"""An MLP generator for feature-vector teachers (tabular data).

The last layer is a BatchNorm: each generated feature is standardised over the batch, matching
the standardised features a teacher was trained on (the normalised space of a data set with a
mean/std), so the generator only has to learn the features' joint structure. Without a
normalisation (the teacher's own input space, whose scale we do not know) that BatchNorm keeps
learnable scale and offset, starting from standardised features.
"""
from __future__ import annotations

from math import prod

import torch
from torch import nn

from datafree.spec import InputSpec
from generators import Generator, check_noise_size, register_generator


class MLPGenerator(Generator):
    def __init__(self, info: InputSpec, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128),
                 conditional: bool = False) -> None:
        super().__init__()
        check_noise_size('mlp', nz)
        self.nz, self.num_classes, self.conditional = nz, info.num_classes, conditional
        self.output_shape = tuple(info.input_shape)
        if conditional:
            self.embed = nn.Embedding(info.num_classes, nz)
        layers: list[nn.Module] = []
        width = nz
        for h in hidden:
            layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.LeakyReLU(0.2)]
            width = h
        out = prod(self.output_shape)
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out, affine=not info.normalized)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z * self.embed(labels)
        return self.net(z).view(z.shape[0], *self.output_shape)


@register_generator("mlp")
def mlp(info: InputSpec, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128), **_: object) -> Generator:
    """MLP generator for feature-vector teachers (standardised outputs)."""
    return MLPGenerator(info, nz, hidden)


@register_generator("mlp_conditional")
def mlp_conditional(info: InputSpec, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128),
                    **_: object) -> Generator:
    """The MLP generator with a class embedding."""
    return MLPGenerator(info, nz, hidden, conditional=True)
