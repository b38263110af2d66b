"""Registered data sets. Each loads into memory as tensors and comes with its `DataInfo`.

Inputs may be images `(C, H, W)` or feature vectors `(F,)`: the core never assumes images.
Samples are stored un-normalised (images in [0, 1] or uint8, vectors raw) and normalised per
batch on the device, so augmentation runs batch-wise on the device too.

The embedded default is scikit-learn's bundled `digits` (1,797 8×8 images, no download):
its fixed split puts, within each class, a seeded quarter of the samples in the test set
(`numpy.random.default_rng(0)`), 1,347 train / 450 test.
"""
from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafree.errors import ConfigError
from datafree.registry import Registry


@dataclass(frozen=True)
class DataInfo:
    """What a model trained on a data set needs to know about its inputs; saved in checkpoints."""

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]  # per channel for images, per feature for vectors
    std: tuple[float, ...]
    augment: str = "none"  # the data set's standard training augmentation (see augment_batch)

    @property
    def is_image(self) -> bool:
        return len(self.input_shape) == 3

    def stats_shape(self) -> tuple[int, ...]:
        return (len(self.mean), 1, 1) if self.is_image else tuple(self.input_shape)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device).view(self.stats_shape())
        std = torch.tensor(self.std, device=x.device).view(self.stats_shape())
        return (x - mean) / std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(self.stats_shape())
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(self.stats_shape())
        return x * std + mean

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DataInfo":
        d = dict(d)
        for key in ("input_shape", "mean", "std"):
            d[key] = tuple(d[key])
        return cls(**d)


@dataclass
class Split:
    """Samples in memory: `x` un-normalised (uint8 images are scaled to [0, 1] per batch), `y` labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class Dataset:
    info: DataInfo
    train: Split
    test: Split


DataLoaderFn = Callable[..., Dataset]
DATASETS: Registry[DataLoaderFn] = Registry("data set")
register_dataset = DATASETS.register


def load_dataset(name: str, root: str | Path = "data", download: bool = False, image_size: int = 32) -> Dataset:
    """Load a registered data set by name; `root` holds torchvision-format files."""
    return DATASETS.get(name)(root=Path(root).expanduser(), download=download, image_size=image_size)


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

    def __init__(self, split: Split, info: DataInfo, batch_size: int, device: torch.device, seed: int,
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


def eval_batches(split: Split, info: DataInfo, batch_size: int, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The test set in order, normalised, no augmentation; under DDP each rank gets a shard."""
    indices = torch.arange(rank, len(split), world_size)
    for start in range(0, len(indices), batch_size):
        idx = indices[start : start + batch_size]
        yield info.normalize(to_float(split.x[idx].to(device))), split.y[idx].to(device)


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


# ---------------------------------------------------------------------------------------------
# Embedded data sets (scikit-learn's bundled files; never downloaded)


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


@register_dataset("digits")
def digits(**_: Any) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (values 0–16 scaled to [0, 1]), 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, test = stratified_split(bunch.target, 0.25)
    mean, std = x[train].mean().item(), x[train].std().item()
    info = DataInfo("digits", 10, (1, 8, 8), (mean,), (std,), augment="shift1")
    return Dataset(info, Split(x[train], y[train]), Split(x[test], y[test]))


def tabular(name: str, loader: Callable[[], Any]) -> Dataset:
    bunch = loader()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, test = stratified_split(bunch.target, 0.25)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    info = DataInfo(name, int(y.max()) + 1, (x.shape[1],), tuple(mean.tolist()), tuple(std.tolist()))
    return Dataset(info, Split(x[train], y[train]), Split(x[test], y[test]))


@register_dataset("breast_cancer")
def breast_cancer(**_: Any) -> Dataset:
    """scikit-learn's Wisconsin breast-cancer table: 30 features, 2 classes."""
    from sklearn.datasets import load_breast_cancer

    return tabular("breast_cancer", load_breast_cancer)


@register_dataset("wine")
def wine(**_: Any) -> Dataset:
    """scikit-learn's wine table: 13 features, 3 classes."""
    from sklearn.datasets import load_wine

    return tabular("wine", load_wine)


# ---------------------------------------------------------------------------------------------
# torchvision data sets, read from a local root (downloaded only when asked)


def require_root(root: Path, download: bool, what: str, can_download: bool = True) -> None:
    if not root.is_dir() and not download:
        hint = ", or add --download to fetch it (needs internet)" if can_download else ""
        raise ConfigError(f"data root {str(root)!r} does not exist; pass --data-root to the folder holding {what}{hint}")


def missing_files(what: str, where: Path) -> ConfigError:
    return ConfigError(f"{what} files not found under {str(where)!r}; point --data-root at them or add --download")


def torchvision_split(cls: Any, root: Path, download: bool, what: str, **kwargs: Any) -> Any:
    require_root(root, download, what)
    try:
        return cls(str(root), download=download, **kwargs)
    except RuntimeError:  # torchvision's "Dataset not found or corrupted"
        raise missing_files(what, root) from None


def mnist_like(cls_name: str, name: str, mean: float, std: float, root: Path, download: bool) -> Dataset:
    """MNIST-format digits, zero-padded from 28×28 to 32×32 as in LeNet-5 (and DAFL/DFAD)."""
    import torchvision

    cls = getattr(torchvision.datasets, cls_name)
    splits = []
    for train in (True, False):
        ds = torchvision_split(cls, root, download, name, train=train)
        x = torch.nn.functional.pad(ds.data.unsqueeze(1), (2, 2, 2, 2))
        splits.append(Split(x, ds.targets.long()))
    return Dataset(DataInfo(name, 10, (1, 32, 32), (mean,), (std,), augment="shift2"), *splits)


@register_dataset("mnist")
def mnist(root: Path, download: bool = False, **_: Any) -> Dataset:
    """MNIST handwritten digits, padded to 32×32 (torchvision files under --data-root)."""
    return mnist_like("MNIST", "mnist", 0.1307, 0.3081, root, download)


@register_dataset("fashion_mnist")
def fashion_mnist(root: Path, download: bool = False, **_: Any) -> Dataset:
    """Fashion-MNIST, padded to 32×32 (torchvision files under --data-root)."""
    return mnist_like("FashionMNIST", "fashion_mnist", 0.2860, 0.3530, root, download)


@register_dataset("svhn")
def svhn(root: Path, download: bool = False, **_: Any) -> Dataset:
    """SVHN street-view digits, 32×32 colour (torchvision .mat files under --data-root)."""
    import torchvision

    splits = []
    for part in ("train", "test"):
        ds = torchvision_split(torchvision.datasets.SVHN, root, download, "SVHN", split=part)
        splits.append(Split(torch.from_numpy(ds.data), torch.from_numpy(ds.labels).long()))
    info = DataInfo("svhn", 10, (3, 32, 32), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), augment="shift2")
    return Dataset(info, *splits)


class CifarUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles of dicts of numpy arrays; allow exactly those classes so that
    reading a data file can never run other code."""

    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"CIFAR file refers to {module}.{name}, which is not allowed")


def read_cifar_batches(folder: Path, names: list[str], label_key: str) -> Split:
    xs, ys = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise missing_files(folder.name, folder)
        with path.open("rb") as f:
            batch = CifarUnpickler(f, encoding="latin1").load()
        xs.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(batch[label_key], dtype=np.int64))
    return Split(torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys)))


def cifar(name: str, tv_class: str, folder: str, train_files: list[str], label_key: str,
          num_classes: int, mean: tuple[float, ...], std: tuple[float, ...], root: Path, download: bool) -> Dataset:
    require_root(root, download, name)
    test_files = ["test"] if name == "cifar100" else ["test_batch"]
    if download and not all((root / folder / f).is_file() for f in train_files + test_files):
        import torchvision

        getattr(torchvision.datasets, tv_class)(str(root), download=True)
    train = read_cifar_batches(root / folder, train_files, label_key)
    test = read_cifar_batches(root / folder, test_files, label_key)
    return Dataset(DataInfo(name, num_classes, (3, 32, 32), mean, std, augment="shift4-flip"), train, test)


@register_dataset("cifar10")
def cifar10(root: Path, download: bool = False, **_: Any) -> Dataset:
    """CIFAR-10, 32×32 colour, 10 classes (python-format batches under --data-root)."""
    files = [f"data_batch_{i}" for i in range(1, 6)]
    return cifar("cifar10", "CIFAR10", "cifar-10-batches-py", files, "labels", 10,
                 (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), root, download)


@register_dataset("cifar100")
def cifar100(root: Path, download: bool = False, **_: Any) -> Dataset:
    """CIFAR-100, 32×32 colour, 100 classes (python-format batches under --data-root)."""
    return cifar("cifar100", "CIFAR100", "cifar-100-python", ["train"], "fine_labels", 100,
                 (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), root, download)


@register_dataset("imagefolder")
def imagefolder(root: Path, image_size: int = 32, **_: Any) -> Dataset:
    """Your own images: root/train/<class>/* and root/test/<class>/*, resized to data.image_size.

    Held in memory as uint8 (fine for small-image sets of up to ~10⁵ images)."""
    import torchvision
    from torchvision.transforms import v2

    require_root(root, False, "an image folder (train/<class>/…, test/<class>/…)", can_download=False)
    transform = v2.Compose([v2.PILToTensor(), v2.Resize((image_size, image_size), antialias=True),
                            v2.RGB()])
    splits, classes = [], None
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise ConfigError(f"image folder {str(root)!r} has no {part}/ subfolder; expected {part}/<class>/<image>")
        ds = torchvision.datasets.ImageFolder(str(root / part), transform=transform)
        if classes is not None and ds.classes != classes:
            raise ConfigError(f"image folder {str(root)!r}: train/ and test/ have different class folders")
        classes = ds.classes
        x = torch.stack([img for img, _ in ds]) if len(ds) else torch.empty(0, 3, image_size, image_size, dtype=torch.uint8)
        splits.append(Split(x, torch.tensor(ds.targets, dtype=torch.long)))
    mean = tuple(to_float(splits[0].x).mean((0, 2, 3)).tolist())
    std = tuple(to_float(splits[0].x).std((0, 2, 3)).clamp_min(1e-8).tolist())
    info = DataInfo(f"imagefolder:{root.name}", len(classes), (3, image_size, image_size), mean, std, augment="shift2-flip")
    return Dataset(info, *splits)
