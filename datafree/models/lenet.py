"""LeNet-5 and LeNet-5-half, the MNIST teacher/student pair of DAFL (Chen et al., 2019) and
DFAD (Fang et al., 2019), after LeCun et al. (1998): three 5x5 convolutions and two fully
connected layers, ReLU activations, max-pooling, no BatchNorm. Made for 32x32 digits."""
from __future__ import annotations

from torch import Tensor, nn

from datafree.errors import ConfigError
from datafree.models import register_model


def _feature_size(size: int) -> int:
    """Spatial size after conv5-pool2-conv5-pool2-conv5 (valid convolutions)."""
    size = (size - 4) // 2
    size = (size - 4) // 2
    return size - 4


class LeNet5(nn.Module):
    """LeNet-5 with configurable widths; `widths` = (conv1, conv2, conv3, fc1) channels."""

    def __init__(
        self,
        num_classes: int,
        input_shape: tuple[int, ...],
        widths: tuple[int, int, int, int] = (6, 16, 120, 84),
        name: str = "lenet5",
    ) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ConfigError(f"model {name!r} expects images (C, H, W), got input shape {input_shape}")
        channels, height, width = input_shape
        out_h, out_w = _feature_size(height), _feature_size(width)
        if out_h < 1 or out_w < 1:
            shape = "x".join(map(str, input_shape))
            raise ConfigError(
                f"model {name!r} needs images of at least 32x32 pixels, got input shape {shape}; "
                "resize the data to 32x32 or pick another model"
            )
        c1, c2, c3, f1 = widths
        self.features = nn.Sequential(
            nn.Conv2d(channels, c1, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, kernel_size=5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(c2, c3, kernel_size=5),
            nn.ReLU(inplace=True),
        )
        self.flatten = nn.Flatten()
        # At 32x32 the last conv map is 1x1, as in the original; larger inputs just flatten more.
        self.fc1 = nn.Sequential(nn.Linear(c3 * out_h * out_w, f1), nn.ReLU(inplace=True))
        self.fc = nn.Linear(f1, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.fc1(self.flatten(self.features(x))))


@register_model("lenet5")
def lenet5(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) for 32×32 inputs: the MNIST teacher of DAFL/DFAD."""
    return LeNet5(num_classes, input_shape, widths=(6, 16, 120, 84), name="lenet5", **kwargs)


@register_model("lenet5_half")
def lenet5_half(num_classes: int, input_shape: tuple[int, ...], **kwargs) -> nn.Module:
    """LeNet-5 with every width halved: the MNIST student of DAFL/DFAD."""
    return LeNet5(num_classes, input_shape, widths=(3, 8, 60, 42), name="lenet5_half", **kwargs)
