"""Registered classifiers. A factory takes `(num_classes, input_shape, **kwargs)` and returns
an `nn.Module` mapping a batch `(N, *input_shape)` to logits `(N, num_classes)`.

Families live one per file; importing this package registers them all. Any torchvision
classifier is available as `torchvision.<name>` (random init; no weights are downloaded).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from datafree.errors import ConfigError
from datafree.registry import Registry

ModelFactory = Callable[..., nn.Module]


def register_torchvision_models(name: str) -> None:
    """torchvision takes ~1 s to import: register its classifiers only when one is asked for."""
    if name.startswith("torchvision."):
        import datafree.models.torchvision_models  # noqa: F401


MODELS: Registry[ModelFactory] = Registry("model", on_miss=register_torchvision_models)
register_model = MODELS.register


def create_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Build a registered model and check, with one dry forward pass, that it accepts
    `input_shape` and returns `num_classes` logits. Its size is checked first on the meta device
    (no memory), so an impossible width or class count is refused before anything is allocated."""
    check_model_size(name, abstract_model(name, num_classes, input_shape, **kwargs), kwargs)
    model = build(name, num_classes, input_shape, kwargs)
    check_model_io(model, name, num_classes, input_shape)
    return model


def build(name: str, num_classes: int, input_shape: tuple[int, ...], kwargs: dict) -> nn.Module:
    try:
        return MODELS.get(name)(num_classes=num_classes, input_shape=tuple(input_shape), **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, RuntimeError, AssertionError) as e:  # a width of -1 or 1.5, a bad option
        first = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"model {name!r} cannot be built with these arguments {kwargs}: {first}") from None


def abstract_model(name: str, num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """The model with its parameters on the meta device: shapes without memory."""
    with torch.device("meta"):
        return build(name, num_classes, input_shape, kwargs)


def check_model_size(name: str, model: nn.Module, kwargs: dict) -> None:
    """Refuse a model whose weights alone would take a quarter of this machine's memory."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    if memory and weights > memory / 4:
        raise ConfigError(f"model {name!r} with arguments {kwargs} has {count_parameters(model):,} parameters "
                          f"({weights / 2**30:.1f} GiB of weights; this machine has {memory / 2**30:.0f} GiB): "
                          f"choose smaller arguments")


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for a look at the models; each gets its own mode back after."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def batchnorm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's BatchNorm layers that keep running statistics (what the `bn` prior matches and
    PreciseBN recomputes)."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def dry_forward(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The model's output for a batch of two zero inputs (in eval mode, without autograd)."""
    with eval_mode(model):
        out = model(torch.zeros(2, *input_shape, device=next(model.parameters()).device))
    if not isinstance(out, torch.Tensor):  # e.g. (logits, features), or a dict of outputs
        raise ConfigError(f"a {type(model).__name__} returns a {type(out).__name__}, not a tensor of class logits; "
                          "give a module whose forward returns the logits alone (a wrapper returning model(x)[0])")
    return out


def check_model_io(model: nn.Module, name: str, num_classes: int, input_shape: tuple[int, ...]) -> None:
    """Raise a clear error when `model` cannot map `(N, *input_shape)` to `(N, num_classes)`."""
    shape = "x".join(map(str, input_shape))
    try:
        out = dry_forward(model, input_shape)
    except (RuntimeError, AssertionError, ValueError) as e:
        raise ConfigError(
            f"model {name!r} does not accept inputs of shape {shape}; pick a model made for this "
            f"input size (see `datafree list models`) ({(str(e).splitlines() or [type(e).__name__])[0]})"
        ) from None
    if tuple(out.shape) != (2, num_classes):
        raise ConfigError(
            f"model {name!r} returns outputs of shape {tuple(out.shape[1:])} for inputs of shape {shape}; "
            f"expected {num_classes} class logits"
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Forward FLOPs for one input, as torch's flop counter counts them (convolutions and matrix products)."""
    with FlopCounterMode(display=False) as counter:
        dry_forward(model, input_shape)
    return counter.get_total_flops() // 2  # dry_forward's batch is two


# Importing the families registers them.
from datafree.models import digits, lenet, resnet, vgg, wrn  # noqa: E402,F401
