"""Registered generators: architectures only, no training logic.

A generator maps noise (and, if conditional, class labels) to a batch in the teacher's
*normalised* input space. `sample(n)` draws the noise itself and returns `(x, labels)`, labels
being the requested classes of a conditional generator or None.
Factories take `(info: InputSpec, reference_parameters=..., reference_flops=..., batch_size=..., **args)`:
the student's parameter count, the teacher's and the student's forward FLOPs for one input together, and
the training batch size are hints for factories that size themselves to them (others ignore them).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.registry import Registry

GENERATORS: Registry[Callable[..., "Generator"]] = Registry("generator")
register_generator = GENERATORS.register


def check_noise_size(name: str, nz: int) -> None:
    if not isinstance(nz, int) or nz <= 0:
        raise ConfigError(f"config key 'generator.args.nz' must be a positive integer for generator {name!r} "
                          f"(got {nz!r})")


class Generator(nn.Module):
    """Base class: subclasses set `nz` and `num_classes` and implement `forward(z, labels)`."""

    nz: int
    num_classes: int
    conditional: bool = False

    def chosen_args(self) -> dict[str, Any]:
        """The arguments this generator's factory chose from the hints (a DCGAN's width): the run records
        them in its config, so that a resume, or a new run of that config, builds this same generator even
        after the rule that chose them has changed."""
        return {}

    def sample(self, n: int, forward: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Draw noise (and classes) and generate; `forward` is this module or its DDP wrapper."""
        device = next(self.parameters()).device
        z = torch.randn(n, self.nz, device=device)
        labels = torch.randint(0, self.num_classes, (n,), device=device) if self.conditional else None
        return (forward or self)(z, labels), labels

    @torch.no_grad()
    def reinitialise(self) -> None:
        """A new generator (CMI every round, `generator.reset_every` for any method), by CMI's reset_model:
        weights N(0, 0.02), biases 0, BatchNorm scales N(1, 0.02). A generator made anew another way
        (NAYER's) overrides this."""
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)


from generators import dcgan, mlp, nayer  # noqa: E402,F401  (registers them)
