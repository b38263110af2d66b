"""CIFAR ResNet-18/34 as used by the data-free distillation benchmarks (DFAD, CMI, Fast):
the ImageNet ResNet of He et al. (2016) with a 3x3 stride-1 stem and no max-pool, so that
32x32 inputs keep enough resolution through the four BasicBlock stages."""
from __future__ import annotations

from torch import Tensor, nn

from datafree.models import register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, out_channels, stride)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = _conv3x3(out_channels, out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet with BasicBlocks, `blocks` per stage, widths 64-128-256-512."""

    widths = (64, 128, 256, 512)

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            _conv3x3(in_channels, self.widths[0]),
            nn.BatchNorm2d(self.widths[0]),
            nn.ReLU(inplace=True),
        )
        channels = self.widths[0]
        stages = []
        for i, (width, count) in enumerate(zip(self.widths, blocks)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(count):
                layers.append(BasicBlock(channels, width, stride if j == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        # Adaptive pooling makes the head independent of the input resolution.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x))


@register_model("resnet18")
def resnet18(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """CIFAR ResNet-18 (3×3 stem, no max-pool), 11.2M parameters."""
    return CifarResNet((2, 2, 2, 2), num_classes, in_channels=input_shape[0], **kwargs)


@register_model("resnet34")
def resnet34(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """CIFAR ResNet-34 (3×3 stem, no max-pool), 21.3M parameters."""
    return CifarResNet((3, 4, 6, 3), num_classes, in_channels=input_shape[0], **kwargs)
