"""The model families: shapes, parameter counts against the published sizes, and errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.models import MODELS, count_parameters, create_model

MNIST = (1, 32, 32)
CIFAR = (3, 32, 32)

# (name, input shape, parameter count for 10 classes as published / in the reference repos)
PUBLISHED = [
    ("lenet5", MNIST, 62_000),
    ("lenet5_half", MNIST, 15_700),
    ("resnet18", CIFAR, 11_200_000),
    ("resnet34", CIFAR, 21_300_000),
    ("wrn16_1", CIFAR, 175_000),
    ("wrn16_2", CIFAR, 690_000),
    ("wrn40_1", CIFAR, 560_000),
    ("wrn40_2", CIFAR, 2_200_000),
    ("vgg11_bn", CIFAR, 9_200_000),
]


@pytest.mark.parametrize("name,shape,expected", PUBLISHED, ids=[p[0] for p in PUBLISHED])
def test_builds_with_published_size(name: str, shape: tuple[int, ...], expected: int) -> None:
    model = create_model(name, num_classes=10, input_shape=shape)
    assert count_parameters(model) == pytest.approx(expected, rel=0.03)
    model.train()
    logits = model(torch.randn(3, *shape))
    assert logits.shape == (3, 10)


@pytest.mark.parametrize("name,shape", [(p[0], p[1]) for p in PUBLISHED], ids=[p[0] for p in PUBLISHED])
def test_last_linear_is_the_classifier(name: str, shape: tuple[int, ...]) -> None:
    # Other code reads penultimate features from the input of the last nn.Linear.
    model = create_model(name, num_classes=7, input_shape=shape).eval()
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    seen: list[torch.Tensor] = []
    last.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    with torch.no_grad():
        logits = model(torch.randn(2, *shape))
        assert torch.allclose(last(seen[0]), logits)
    assert last.out_features == 7


def test_cifar_models_accept_other_channel_counts() -> None:
    model = create_model("resnet18", num_classes=5, input_shape=(1, 32, 32))
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)


def test_lenet_rejects_too_small_inputs() -> None:
    with pytest.raises(ConfigError, match="lenet5"):
        create_model("lenet5", num_classes=10, input_shape=(1, 8, 8))


def test_torchvision_model_builds_and_runs() -> None:
    assert "torchvision.mobilenet_v3_small" in MODELS
    model = create_model("torchvision.resnet18", num_classes=10, input_shape=CIFAR)
    assert model(torch.randn(2, *CIFAR)).shape == (2, 10)


def test_torchvision_model_rejects_grayscale() -> None:
    with pytest.raises(ConfigError, match="3-channel"):
        create_model("torchvision.resnet18", num_classes=10, input_shape=MNIST)


def test_torchvision_vit_rejects_sizes_it_cannot_patch() -> None:
    with pytest.raises(ConfigError, match="multiple of 16"):
        create_model("torchvision.vit_b_16", num_classes=10, input_shape=(3, 28, 28))


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(ConfigError, match="resnet18"):
        create_model("resnet19", num_classes=10, input_shape=CIFAR)


def test_unknown_keyword_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="wrn16_1"):
        create_model("wrn16_1", num_classes=10, input_shape=CIFAR, widen=3)
