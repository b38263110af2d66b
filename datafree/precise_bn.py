"""BatchNorm statistics recomputed for the final weights (PreciseBN) at the end of real-data training.

A BatchNorm layer's running statistics are an exponential average over past batches, and past
batches went through past weights. With the usual momentum 0.1 the average forgets within ~20
steps and the lag hardly matters (retrained with this pass: the digits teacher 99.56% either way,
the rgb32 ResNet-18 99.10% against 99.00%, one test image). torchvision's MobileNetV3 and
EfficientNet use momentum 0.01: `datafree train-teacher --model torchvision.mobilenet_v3_small` on
mnist5k at 3×40×40, 400 steps, reached a training loss of 0.1 and tested at **22.4%** in eval mode;
with the pass below, 97.2%. Such a teacher would also hand the `bn` prior of every data-free method
statistics that its weights never produce.

So, as pycls and Detectron2 do (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021): one pass
without gradients over up to 8,192 training samples in train mode, each layer's statistics the
plain average over those batches. Data-free students are not recomputed: there is no real data.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from datafree.models import batchnorm_layers

PRECISE_BN_SAMPLES = 8192  # pycls's default


@torch.no_grad()
def recompute_batchnorm_statistics(model: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Reset the running statistics of every BatchNorm layer in `model` and average them anew over
    `batches`, in train mode (momentum None: a cumulative average). Returns how many batches it
    read (0: the model has no BatchNorm, and none is read)."""
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    momenta, was_training = [layer.momentum for layer in layers], model.training
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.train()
    count = 0
    try:
        for x in batches:
            model(x)
            count += 1
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        model.train(was_training)
    return count
