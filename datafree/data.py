"""Samples in memory and the batches drawn from them.

Inputs may be images `(C, H, W)` or feature vectors `(F,)`: the core never assumes images.
Samples are stored un-normalised (images in [0, 1] or uint8, vectors raw) and normalised per
batch on the device with the `InputSpec`, so augmentation runs batch-wise on the device too.

Registered data sets (`datasets.py`) give a spec with train and test splits; `register_dataset`
adds your own, by name, to every command in the process that registers it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from datafree.errors import ConfigError
from datafree.registry import Registry
from datafree.spec import InputSpec


@dataclass
class Split:
    """Samples in memory: `x` un-normalised (uint8 images are scaled to [0, 1] per batch), `y`
    labels, or None for inputs without labels."""

    x: torch.Tensor
    y: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.x)

    @property
    def labelled(self) -> bool:
        return self.y is not None


@dataclass
class Dataset:
    info: InputSpec
    train: Split | None  # None: no training data (data-free runs of a user's own model)
    test: Split | None  # None: no test data; the run reports agreement on held-out synthetic samples


DatasetLoader = Callable[..., Dataset]
DATASETS: Registry[DatasetLoader] = Registry("data set")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Register a data set under `name`: a function `(root: Path, download: bool, **_) -> Dataset`.

        @datafree.register_dataset("blobs")
        def blobs(**_):
            return datafree.Dataset(datafree.InputSpec((20,), 5, mean, std, name="blobs"),
                                    datafree.Split(x_train, y_train), datafree.Split(x_test, y_test))

    The registration lives in the process that runs it: import your module before calling
    datafree (or run the CLI through a script that does).
    """
    return DATASETS.register(name)


def load_dataset(name: str, root: str | Path = "data", download: bool = False, image_size: int = 0,
                 channels: int = 0) -> Dataset:
    """Load a registered data set by name; `root` holds torchvision-format files. `image_size`
    (square side) and `channels` (1 or 3) convert image data sets; 0 keeps theirs."""
    dataset = DATASETS.get(name)(root=Path(root).expanduser(), download=download, image_size=image_size)
    if image_size or channels:
        dataset = convert_images(dataset, image_size, channels)
    return dataset


def convert_images(dataset: Dataset, image_size: int, channels: int) -> Dataset:
    """Resize an image data set to `image_size`² pixels and/or `channels` channels (grey images are
    repeated into RGB, colour averaged into grey); the normalisation follows."""
    info = dataset.info
    if not info.is_image:
        raise ConfigError(f"data.image_size and data.channels apply to images; {info.name} has feature vectors "
                          f"(set them to 0)")
    c, h, w = info.input_shape
    size = (image_size, image_size) if image_size else (h, w)
    to = channels or c
    if channels not in (0, 1, 3):
        raise ConfigError(f"config key 'data.channels' must be 0 (the data set's own), 1 or 3 (got {channels})")
    if (to, *size) == (c, h, w):
        return dataset
    if to != c and c not in (1, 3):
        raise ConfigError(f"cannot convert {c}-channel images of {info.name} to {to} channels")

    def convert(split: Split | None) -> Split | None:
        if split is None:
            return None
        out = []
        for start in range(0, len(split), 4096):  # in chunks: the float copy of a whole set can be large
            x = to_float(split.x[start:start + 4096])
            if tuple(x.shape[-2:]) != size:
                x = F.interpolate(x, size=size, mode="bilinear", antialias=size[0] < h, align_corners=False)
            if to == 3 and c == 1:
                x = x.expand(-1, 3, -1, -1)
            elif to == 1 and c == 3:
                x = x.mean(1, keepdim=True)
            out.append((x.clamp(0, 1) * 255).round().to(torch.uint8) if split.x.dtype == torch.uint8
                       else x.contiguous())
        return Split(torch.cat(out), split.y)

    def channel_stats(values: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if values is None or to == c or len(values) == 1:
            return values
        return values * 3 if to == 3 else (sum(values) / len(values),)

    spec = InputSpec((to, *size), info.num_classes, channel_stats(info.mean), channel_stats(info.std),
                     name=info.name, augment=info.augment)
    return Dataset(spec, convert(dataset.train), convert(dataset.test))


# ---------------------------------------------------------------------------------------------
# Batches


def to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


class BatchStream:
    """An endless stream of shuffled training batches, normalised and augmented on `device`.

    The order depends only on (seed, epoch), and `position` counts the batches drawn, so a
    resumed run continues with exactly the batches an uninterrupted one would have seen. Under
    torch.distributed each rank takes its own slice of every global batch.
    """

    def __init__(self, split: Split, info: InputSpec, batch_size: int, device: torch.device, seed: int,
                 augment: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if len(split) < batch_size * world_size:
            raise ConfigError(
                f"trainer.batch_size={batch_size} needs at least {batch_size * world_size} training samples; "
                f"{info.name} has {len(split)}: lower trainer.batch_size"
            )
        self.split, self.info, self.batch_size, self.device = split, info, batch_size, device
        self.seed, self.augment, self.rank, self.world_size = seed, augment, rank, world_size
        self.position = 0
        self.batches_per_epoch = len(split) // (batch_size * world_size)  # drop the ragged last batch
        self._perm_epoch, self._perm = -1, torch.empty(0)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, index = divmod(self.position, self.batches_per_epoch)
        if epoch != self._perm_epoch:
            generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(len(self.split), generator=generator), epoch
        global_batch = self.batch_size * self.world_size
        start = index * global_batch + self.rank * self.batch_size
        idx = self._perm[start : start + self.batch_size]
        self.position += 1
        x = to_float(self.split.x[idx].to(self.device, non_blocking=True))
        if self.augment:
            x = augment_batch(x, self.info.augment)
        return self.info.normalize(x), self.split.y[idx].to(self.device, non_blocking=True)


def eval_batches(split: Split, info: InputSpec, batch_size: int, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """The test set in order, normalised, no augmentation; under DDP each rank gets a shard.
    Labels are None for unlabelled inputs."""
    indices = torch.arange(rank, len(split), world_size)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        y = split.y[idx].to(device) if split.y is not None else None
        yield info.normalize(to_float(split.x[idx].to(device))), y


def augment_batch(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Standard per-data-set augmentation, per sample, batch-wise on the device.

    `shiftN`: random translation by up to N pixels (zero padding); `shiftN-flip` adds a random
    horizontal flip (CIFAR's pad-4 crop + flip); `none`: vectors and anything else.
    """
    if kind == "none":
        return x
    shift_text, _, flip = kind.partition("-")
    pad = int(shift_text.removeprefix("shift"))
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])[:, None, None, :]
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
    out = padded[batch, channels, rows, cols]
    if flip == "flip":
        flipped = torch.rand(n, device=x.device) < 0.5
        out = torch.where(flipped[:, None, None, None], out.flip(-1), out)
    return out


def stratified_split(y: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Within each class, a seeded `test_fraction` of the samples goes to the test set."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


# Importing the loaders registers them.
from datafree import datasets  # noqa: E402,F401
