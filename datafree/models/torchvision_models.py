"""Every torchvision classifier, registered as `torchvision.<name>` with random weights
(`weights=None`: nothing is downloaded). Registration only stores a small factory per
name, so importing this module builds no model."""
from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from datafree.errors import ConfigError
from datafree.models import register_model

# These two return (logits, aux_logits) tuples in training mode unless aux_logits is off, and
# their default init (init_weights=True) is slow and warns; keep both consistent with the rest.
_EXTRA_DEFAULTS: dict[str, dict[str, object]] = {
    "googlenet": {"aux_logits": False, "init_weights": False},
    "inception_v3": {"aux_logits": False, "init_weights": False},
}


def _vit_options(name: str, input_shape: tuple[int, ...]) -> dict[str, object]:
    """ViTs are built for one fixed square image size (224 by default); build them for the
    data's size instead, and say clearly when that size cannot work (torchvision would only
    fail an assert, which the registry's dry run does not turn into a clear error)."""
    if not name.startswith("vit_") or len(input_shape) != 3:
        return {}
    patch = int(name.rsplit("_", 1)[1])
    _, height, width = input_shape
    if height != width or height % patch != 0:
        raise ConfigError(
            f"model 'torchvision.{name}' needs square images whose side is a multiple of {patch}, "
            f"got input shape {'x'.join(map(str, input_shape))}"
        )
    return {"image_size": height}


def _make_factory(name: str) -> Callable[..., nn.Module]:
    def factory(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
        # We refuse rather than patch the first conv: where it lives differs per architecture.
        if len(input_shape) != 3 or input_shape[0] != 3:
            shape = "x".join(map(str, input_shape))
            raise ConfigError(
                f"model 'torchvision.{name}' expects 3-channel images (3xHxW), got input shape {shape}; "
                "pick a model from this package (e.g. lenet5, resnet18) for other inputs"
            )
        options = {**_EXTRA_DEFAULTS.get(name, {}), **_vit_options(name, input_shape), **kwargs}
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)

    factory.__name__ = f"torchvision_{name}"
    factory.__doc__ = f"torchvision.models.{name} with random initialisation."
    return factory


for _name in torchvision.models.list_models(module=torchvision.models):
    register_model(f"torchvision.{_name}")(_make_factory(_name))
