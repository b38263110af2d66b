"""The frozen teacher's convolutions trimmed to the kernel taps that reach its input: the same outputs
and input gradients, the same state dict, and the whole kernel again on inputs of another size."""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from conftest import FAST
from torch import nn

from datafree.config import load
from datafree.data import Dataset
from datafree.models import create_model
from datafree.spec import InputSpec
from datafree.trainer import Trainer
from datafree.trimmed_conv import TrimmedConv2d, trim_convolutions, used_taps


def taps_that_see_input(size: int, kernel: int, stride: int, padding: int) -> set[int]:
    outputs = (size + 2 * padding - kernel) // stride + 1
    return {tap for tap in range(kernel) for i in range(outputs) if 0 <= i * stride - padding + tap < size}


@pytest.mark.parametrize("size, kernel, stride, padding",
                         [c for c in itertools.product(range(1, 6), (1, 2, 3, 5), (1, 2, 3), (0, 1, 2))
                          if c[0] + 2 * c[3] >= c[1]])
def test_used_taps_keeps_every_tap_that_sees_input(size, kernel, stride, padding):
    """Along each axis, no dropped tap ever meets the input, and a trimmed convolution answers as the whole one."""
    first, last, _ = used_taps(size, kernel, stride, padding)
    seen = taps_that_see_input(size, kernel, stride, padding)
    assert seen <= set(range(first, last + 1))
    if (first, last) != (0, kernel - 1):  # trimmed: to the first and last tap that sees the input
        assert first == min(seen) and last == max(seen)
    conv = nn.Conv2d(2, 3, kernel, stride, padding).requires_grad_(False)
    whole = copy.deepcopy(conv)
    trimmed = trim_convolutions(nn.Sequential(conv), (2, size, size))
    assert trimmed == (["0"] if (first, last) != (0, kernel - 1) else [])
    x = torch.randn(2, 2, size, size)
    torch.testing.assert_close(conv(x), whole(x), rtol=1e-5, atol=1e-6)


def resnet_teacher() -> nn.Module:
    torch.manual_seed(0)
    return create_model("torchvision.resnet18", 10, (3, 32, 32)).eval().requires_grad_(False)


def outputs_and_input_gradient(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (gradient,) = torch.autograd.grad(logits.square().sum(), x)
    return logits.detach(), gradient


def test_resnet18_at_32x32_trims_its_last_stage_and_answers_the_same():
    """At 32×32 a torchvision ResNet-18's last stage sees 2×2 and 1×1 maps: four of its 3×3
    convolutions are trimmed (to 2×2 and 1×1); its answers and input gradients stay those of the
    whole network, on the trimmed size and on another."""
    whole = resnet_teacher()
    trimmed = copy.deepcopy(whole)
    keys = {k: v.shape for k, v in trimmed.state_dict().items()}
    names = trim_convolutions(trimmed, (3, 32, 32))
    assert names == ["layer4.0.conv1", "layer4.0.conv2", "layer4.1.conv1", "layer4.1.conv2"]
    convs = {name: trimmed.get_submodule(name) for name in names}
    kernels = {name: conv.weight[:, :, conv.rows, conv.cols].shape[-2:] for name, conv in convs.items()}
    assert kernels == {"layer4.0.conv1": (2, 2), "layer4.0.conv2": (1, 1), "layer4.1.conv1": (1, 1),
                       "layer4.1.conv2": (1, 1)}
    assert {k: v.shape for k, v in trimmed.state_dict().items()} == keys  # weights kept whole, not copied
    assert all(isinstance(conv, TrimmedConv2d) for conv in convs.values())
    for side in (32, 48):  # 48×48: 2×2 maps in the last stage, where every tap is used again
        x = torch.randn(4, 3, side, side, generator=torch.Generator().manual_seed(side))
        torch.testing.assert_close(outputs_and_input_gradient(trimmed, x), outputs_and_input_gradient(whole, x),
                                   rtol=1e-5, atol=1e-6)


def test_a_weight_loaded_after_trimming_is_the_one_used():
    whole = resnet_teacher()
    trimmed = copy.deepcopy(whole)
    trim_convolutions(trimmed, (3, 32, 32))
    torch.manual_seed(1)
    other = create_model("torchvision.resnet18", 10, (3, 32, 32)).eval()
    trimmed.load_state_dict(other.state_dict())
    x = torch.randn(4, 3, 32, 32)
    torch.testing.assert_close(trimmed(x), other(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, shape", [("digits_cnn", (1, 8, 8)), ("lenet5", (1, 32, 32)),
                                         ("digits_cnn", (3, 32, 32))])
def test_networks_whose_kernels_always_see_input_are_left_alone(name, shape):
    model = create_model(name, 10, shape).eval()
    assert trim_convolutions(model, shape) == []
    assert not any(isinstance(m, TrimmedConv2d) for m in model.modules())


class PooledTeacher(nn.Module):
    """A 3×3 convolution after global pooling: 8 of its 9 taps only ever meet padding."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


@pytest.mark.parametrize("trim", [True, False])
def test_trainer_trims_the_teacher_unless_told_not_to(trim):
    torch.manual_seed(0)
    teacher = PooledTeacher().eval()
    reference = copy.deepcopy(teacher)
    cfg = load(overrides={**FAST, "method.name": "ours", "trainer.device": "cpu", "trainer.batch_size": 8,
                          "data.name": "", "data.input_shape": [1, 8, 8], "data.mean": [0.5], "data.std": [0.25],
                          "trainer.trim_teacher": trim})
    spec = InputSpec((1, 8, 8), 10, (0.5,), (0.25,), name="pooled")
    trainer = Trainer(cfg, Dataset(spec, None, None), create_model("digits_cnn_half", 10, (1, 8, 8)), teacher, None)
    assert isinstance(trainer.teacher.features[4], TrimmedConv2d) == trim
    trainer.train_step()
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(outputs_and_input_gradient(trainer.teacher, x),
                               outputs_and_input_gradient(reference, x), rtol=1e-5, atol=1e-6)
