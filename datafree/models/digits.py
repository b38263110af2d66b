"""Small classifiers sized for scikit-learn's 8×8 digits and for feature vectors.

`digits_cnn` is a VGG-style stack of 3×3 conv + BatchNorm blocks in three resolution stages;
its parameter count grows with width², so width 32 (teacher, 140k parameters) and width 15
(student, 31k: just under a quarter) give the capacity ratio the published MNIST pairs use.
`mlp` flattens any input shape, so a feature-vector classifier can be a teacher or student.
"""
from __future__ import annotations

from math import prod

from torch import nn

from datafree.models import register_model


def conv_bn_relu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DigitsCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int) -> None:
        super().__init__()
        w = width
        self.stage1 = nn.Sequential(conv_bn_relu(in_channels, w), conv_bn_relu(w, w))
        self.stage2 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(w, 2 * w), conv_bn_relu(2 * w, 2 * w))
        self.stage3 = nn.Sequential(nn.MaxPool2d(2), conv_bn_relu(2 * w, 4 * w))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stage3(self.stage2(self.stage1(x)))))


@register_model("digits_cnn")
def digits_cnn(num_classes: int, input_shape: tuple[int, ...], width: int = 32) -> nn.Module:
    """Teacher-sized CNN for small images (width 32: ~140k parameters on digits)."""
    return DigitsCNN(num_classes, input_shape[0], width)


@register_model("digits_cnn_half")
def digits_cnn_half(num_classes: int, input_shape: tuple[int, ...], width: int = 15) -> nn.Module:
    """The student of the digits benchmarks: 0.22× the teacher's parameters (31k)."""
    return DigitsCNN(num_classes, input_shape[0], width)


@register_model("digits_cnn_tiny")
def digits_cnn_tiny(num_classes: int, input_shape: tuple[int, ...], width: int = 4) -> nn.Module:
    """A large capacity gap: 1/57 of the teacher's parameters (2.4k)."""
    return DigitsCNN(num_classes, input_shape[0], width)


@register_model("mlp")
def mlp(num_classes: int, input_shape: tuple[int, ...], hidden: list[int] | tuple[int, ...] = (256, 128),
        batch_norm: bool = True) -> nn.Module:
    """Flatten → [Linear → BatchNorm → ReLU] × len(hidden) → Linear; any input shape."""
    layers: list[nn.Module] = [nn.Flatten()]
    width = prod(input_shape)
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h) if batch_norm else nn.Identity(), nn.ReLU(inplace=True)]
        width = h
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
