"""An MLP generator for feature-vector teachers (tabular data).

The last layer is a BatchNorm without affine parameters: each generated feature is
standardised over the batch, matching the standardised real features a teacher was trained
on, so the generator only has to learn the features' joint structure.
"""
from __future__ import annotations

from math import prod

import torch
from torch import nn

from datafree.data import DataInfo
from generators import Generator, check_noise_size, register_generator


class MLPGenerator(Generator):
    def __init__(self, info: DataInfo, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128),
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
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out, affine=False)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            z = z * self.embed(labels)
        return self.net(z).view(z.shape[0], *self.output_shape)


@register_generator("mlp")
def mlp(info: DataInfo, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128)) -> Generator:
    """MLP generator for feature-vector teachers (standardised outputs)."""
    return MLPGenerator(info, nz, hidden)


@register_generator("mlp_conditional")
def mlp_conditional(info: DataInfo, nz: int = 64, hidden: list[int] | tuple[int, ...] = (128, 128)) -> Generator:
    """The MLP generator with a class embedding."""
    return MLPGenerator(info, nz, hidden, conditional=True)
