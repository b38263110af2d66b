"""NAYER's generator (Tran et al., CVPR 2024; tmtuan1307/NAYER generator.py, NLGenerator).

Its input is not noise but the target class: a fixed embedding per class → BatchNorm1d → a
*noisy layer* → the DCGAN body. The noisy layer is one Linear per group of K samples (K = class
count; a batch is K classes repeated), re-initialised N(0, 1) before every synthesis round
(`reset_noise`), so that a few steps from the same generator give new, different samples; the
body carries what was learned across rounds. The method re-creates the whole generator every
`g_life` iterations (`reinitialise`). For feature vectors the body is the `mlp` generator.

Deviation: NAYER embeds the class *names* with a pretrained text encoder (512-d). That needs the
encoder and the names, neither available offline (nor for a user's own model, whose classes may
be anonymous), so each class gets a fixed random Gaussian embedding (seeded, the same in every
run) of the same size.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from datafree.spec import InputSpec
from generators import Generator, register_generator
from generators.dcgan import DCGANGenerator
from generators.mlp import MLPGenerator


class NoisyLayerGenerator(Generator):
    conditional = True

    def __init__(self, info: InputSpec, embedding_size: int = 512, noise_size: int = 256, width: int | None = None,
                 reference_parameters: int | None = None, reference_flops: int | None = None,
                 batch_size: int = 256) -> None:
        super().__init__()
        self.nz, self.num_classes = noise_size, info.num_classes
        fixed = torch.Generator().manual_seed(0)
        self.register_buffer("class_embedding", torch.randn(info.num_classes, embedding_size, generator=fixed))
        self.norm = nn.BatchNorm1d(embedding_size)
        groups = math.ceil(batch_size / info.num_classes)
        self.noisy = nn.ModuleList(nn.Linear(embedding_size, noise_size) for _ in range(groups))
        self.body = (DCGANGenerator(info, nz=noise_size, width=width, reference_parameters=reference_parameters,
                                    reference_flops=reference_flops)
                     if info.is_image else MLPGenerator(info, nz=noise_size))
        self.reset_noise()

    def chosen_args(self) -> dict[str, Any]:
        return self.body.chosen_args()

    def sample(self, n: int, forward=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Class-balanced: every class equally often, the rest at random."""
        device = self.class_embedding.device
        k = self.num_classes
        labels = torch.cat([torch.arange(k, device=device).repeat(n // k),
                            torch.randint(0, k, (n % k,), device=device)])
        return (forward or self)(None, labels), labels

    def forward(self, z: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        embedded = self.norm(self.class_embedding[labels])
        k = self.num_classes
        noise = torch.cat([self.noisy[i % len(self.noisy)](embedded[start:start + k])
                           for i, start in enumerate(range(0, len(labels), k))])
        return self.body(noise)

    @torch.no_grad()
    def reset_noise(self) -> None:
        for layer in self.noisy:
            nn.init.normal_(layer.weight, 0.0, 1.0)
            nn.init.zeros_(layer.bias)

    @torch.no_grad()
    def reinitialise(self) -> None:
        """A new generator, as NAYER builds one every g_life epochs (BatchNorm statistics too)."""
        for module in self.modules():
            if module is not self and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        self.reset_noise()


@register_generator("nayer")
def nayer(info: InputSpec, embedding_size: int = 512, noise_size: int = 256, width: int | None = None,
          reference_parameters: int | None = None, reference_flops: int | None = None,
          batch_size: int = 256) -> Generator:
    """NAYER's generator: class embedding → BatchNorm → re-initialised noisy layer → DCGAN body."""
    return NoisyLayerGenerator(info, embedding_size, noise_size, width, reference_parameters, reference_flops,
                               batch_size)
