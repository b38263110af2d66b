"""CIFAR VGG-11 with BatchNorm (Simonyan & Zisserman, 2015), in the form used by the CIFAR
teachers of CMI and Fast: the VGG conv stack with BN, five max-pools taking 32x32 to 1x1,
and a single linear classifier 512 -> num_classes instead of the ImageNet 4096-wide head."""
from __future__ import annotations

from torch import Tensor, nn

from datafree.models import register_model

# Output channels per conv layer; "M" is a 2x2 max-pool.
VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _make_features(config: tuple[int | str, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            assert isinstance(item, int)
            layers += [nn.Conv2d(in_channels, item, 3, padding=1), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
            in_channels = item
    return nn.Sequential(*layers)


class CifarVGG(nn.Module):
    def __init__(self, config: tuple[int | str, ...], num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        self.features = _make_features(config, in_channels)
        # A no-op at 32x32 (the map is already 1x1); lets larger inputs reach the 512-d head.
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(512, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(x)))


@register_model("vgg11_bn")
def vgg11_bn(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """VGG-11 with BatchNorm for CIFAR, 9.2M parameters."""
    return CifarVGG(VGG11, num_classes, in_channels=input_shape[0], **kwargs)
