"""Nearest-neighbour upsampling ×2 followed by a 3×3 convolution, computed without the upsampled copy.

Each output pixel of `Conv3×3(Upsample×2(x))` reads a 3×3 window of the upsampled image, i.e. a 2×2 window
of `x` whose taps are sums of the kernel's taps; which sums depends only on the pixel's parity (row and
column, four phases). So the pair equals one convolution of `x` with four 2×2 kernels built from the 3×3
one, its four outputs interleaved — the same function and the same parameters, in 16 multiply-adds per
small-image pixel instead of 36 and without writing the upsampled image (on 2 CPU cores the 44→22 layer
of the 32×32 DCGAN generator, forward and backward at batch 64: 58 ms → 16 ms). On images of 4×4 and
less the extra small operations cost more than they save (the 8×8 digits generator's forward, batch 32:
0.69 ms plain against 1.11 ms fused), so those run plain; from 7×7 up the fused form was faster.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FUSE_FROM_PIXELS = 49  # the small image's height × width from which the fused form is used (7×7)


def phase_taps(kernel: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3 taps along `dim` folded into 2 for even and odd output positions. The even position 2i reads
    upsampled rows 2i−1, 2i, 2i+1 = small rows i−1, i, i; the odd one 2i+1 reads small rows i, i, i+1."""
    first, middle, last = kernel.unbind(dim)
    return torch.stack([first, middle + last], dim), torch.stack([first + middle, last], dim)


def upsample_conv(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """`conv(F.interpolate(x, scale_factor=2, mode="nearest"))` for a 3×3, stride-1, padding-1 `conv`."""
    n, _, height, width = x.shape
    out = conv.out_channels
    # the sums stay in the weights' precision (fp32 under autocast, as the plain convolution's weights)
    kernels = torch.cat([column for row in phase_taps(conv.weight, 2) for column in phase_taps(row, 3)])
    bias = None if conv.bias is None else conv.bias.repeat(4)
    # on x padded by 1, the 2×2 window at (p, q) covers small rows p−1, p: even rows take p = i, odd p = i + 1
    y = F.conv2d(F.pad(x, (1, 1, 1, 1)), kernels, bias).unflatten(1, (2, 2, out))
    rows = [torch.stack([y[:, a, b, :, a:a + height, b:b + width] for b in (0, 1)], -1) for a in (0, 1)]
    return torch.stack(rows, 3).reshape(n, out, 2 * height, 2 * width)


def fusable(upsample: nn.Module, conv: nn.Module | None) -> bool:
    return (isinstance(upsample, nn.Upsample) and upsample.mode == "nearest" and upsample.size is None
            and upsample.scale_factor in (2, 2.0, (2.0, 2.0)) and type(conv) is nn.Conv2d
            and conv.kernel_size == (3, 3) and conv.stride == (1, 1) and conv.padding == (1, 1)
            and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros")


class ResizeConvSequential(nn.Sequential):
    """`nn.Sequential` that runs each `Upsample(×2, nearest) → Conv2d(3×3, padding 1)` pair on an image of
    at least `FUSE_FROM_PIXELS` pixels as `upsample_conv`. The layers, their names and state dict are
    those of the plain sequence."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = list(self)
        i = 0
        while i < len(layers):
            following = layers[i + 1] if i + 1 < len(layers) else None
            if x.dim() == 4 and x.shape[-2] * x.shape[-1] >= FUSE_FROM_PIXELS and fusable(layers[i], following):
                x, i = upsample_conv(x, following), i + 2
            else:
                x, i = layers[i](x), i + 1
        return x
