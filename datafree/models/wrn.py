"""Wide Residual Networks WRN-depth-k (Zagoruyko & Komodakis, 2016): a 3x3 stem conv, three
groups of pre-activation (BN-ReLU-conv) basic blocks of widths 16k, 32k and 64k with
(depth - 4) / 6 blocks each, then BN-ReLU, global average pooling and a linear layer.
WRN-40-2 / WRN-16-x are the standard CIFAR teacher/student pairs of CMI and Fast."""
from __future__ import annotations

from torch import Tensor, nn

from datafree.errors import ConfigError
from datafree.models import register_model


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 with an identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.projection: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.projection = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.dropout(self.relu(self.bn2(out))))
        # As in the original code, a projection shortcut sees the pre-activated input.
        shortcut = x if self.projection is None else self.projection(activated)
        return out + shortcut


class WideResNet(nn.Module):
    def __init__(
        self, depth: int, widen: int, num_classes: int, in_channels: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ConfigError(f"wide resnet depth must be 6n+4 (e.g. 16, 28, 40), got {depth}")
        blocks = (depth - 4) // 6
        widths = (16 * widen, 32 * widen, 64 * widen)
        self.stem = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        channels = 16
        groups = []
        for i, width in enumerate(widths):
            layers = []
            for j in range(blocks):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(PreActBlock(channels, width, stride, dropout))
                channels = width
            groups.append(nn.Sequential(*layers))
        self.group1, self.group2, self.group3 = groups
        # Pre-activation blocks leave the last output un-normalised, hence the final BN-ReLU.
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
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
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.group3(self.group2(self.group1(self.stem(x))))
        return self.fc(self.pool(self.relu(self.bn(x))))


def wide_resnet(
    depth: int, widen: int, num_classes: int, input_shape: tuple[int, ...], dropout: float = 0.0
) -> WideResNet:
    """WRN-`depth`-`widen` for inputs of shape `input_shape` (C, H, W)."""
    return WideResNet(depth, widen, num_classes, in_channels=input_shape[0], dropout=dropout)


@register_model("wrn16_1")
def wrn16_1(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Wide ResNet 16-1, 0.18M parameters."""
    return wide_resnet(16, 1, num_classes, input_shape, **kwargs)


@register_model("wrn16_2")
def wrn16_2(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Wide ResNet 16-2, 0.69M parameters."""
    return wide_resnet(16, 2, num_classes, input_shape, **kwargs)


@register_model("wrn40_1")
def wrn40_1(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Wide ResNet 40-1, 0.56M parameters."""
    return wide_resnet(40, 1, num_classes, input_shape, **kwargs)


@register_model("wrn40_2")
def wrn40_2(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """Wide ResNet 40-2, 2.2M parameters."""
    return wide_resnet(40, 2, num_classes, input_shape, **kwargs)
