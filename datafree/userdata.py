"""Your own test data, in whatever form you hold it, as a `Split` the evaluation can read.

Accepted: `(x, y)` or `(x,)` tensors or numpy arrays, a `torch.utils.data.Dataset` or `DataLoader`
yielding `x` or `(x, y)`, a `.npz` file with array `x` (and `y` when labelled), or an image folder
with `<class>/` (or `test/<class>/`) subfolders. Inputs are in the space the `InputSpec` describes:
raw (un-normalised) when it gives mean/std, else exactly what the teacher takes; uint8 inputs are
scaled to [0, 1]. Labels are class indices. Everything is checked before training starts.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from datafree.data import Split
from datafree.errors import ConfigError
from datafree.spec import InputSpec


def as_tensor(value: Any, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise ConfigError(f"test data {what} is an array of Python objects; pass numbers")
        return torch.from_numpy(np.ascontiguousarray(value))
    raise ConfigError(f"test data {what} must be a tensor or numpy array (got {type(value).__name__})")


def from_arrays(x: Any, y: Any | None) -> Split:
    x = as_tensor(x, "inputs")
    if x.dtype != torch.uint8:  # uint8 images stay bytes: scaled to [0, 1] per batch
        x = x.float()
    if y is None:
        return Split(x, None)
    y = as_tensor(y, "labels")
    if y.is_floating_point() and not bool((y == y.round()).all()):
        raise ConfigError("test labels must be class indices (whole numbers), not probabilities or scores")
    y = y.long().reshape(-1) if y.dim() > 1 and y.shape[-1] == 1 else y.long()
    if y.dim() != 1 or len(y) != len(x):
        raise ConfigError(f"test labels must be one class index per input: {len(x)} inputs, "
                          f"labels of shape {tuple(y.shape)}")
    return Split(x, y)


def from_batches(batches: Any, what: str) -> Split:
    xs, ys = [], []
    for item in batches:
        if isinstance(item, dict):
            raise ConfigError(f"test data {what} yields dicts; yield x or (x, y)")
        x, y = (item[0], item[1] if len(item) > 1 else None) if isinstance(item, (tuple, list)) else (item, None)
        xs.append(as_tensor(x, "inputs"))
        if y is not None:
            ys.append(as_tensor(y, "labels").reshape(-1))
    if not xs:
        raise ConfigError(f"test data {what} is empty; pass some inputs or none at all")
    if ys and len(ys) != len(xs):
        raise ConfigError(f"test data {what} gives labels for some batches only")
    return from_arrays(torch.cat(xs), torch.cat(ys) if ys else None)


def read_npz(path: Path) -> Split:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files:
                raise ConfigError(f"{path} holds arrays {', '.join(f.files) or 'none'}; "
                                  "it needs 'x' (and 'y' when labelled)")
            return from_arrays(f["x"], f["y"] if "y" in f.files else None)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:  # not a zip, truncated, an object array (refused, never unpickled)
        raise ConfigError(f"{path} is not a readable .npz file ({str(e).splitlines()[0][:120]}); "
                          f"write one with numpy.savez(path, x=inputs, y=labels)") from None


def read_test_data(test_data: Any, spec: InputSpec | None) -> Split | None:
    """`test_data` as a Split (None: no test data). Image folders are read at the spec's image size."""
    if test_data is None:
        return None
    if isinstance(test_data, (str, Path)):
        path = Path(test_data).expanduser()
        if not path.exists():
            raise ConfigError(f"test data {str(path)!r} not found; pass a .npz file or an image folder")
        if path.is_dir():
            from datafree.images import read_image_folder

            if spec is None or not spec.is_image:
                raise ConfigError(f"test data {str(path)!r} is an image folder; give the image input shape "
                                  f"(--input-shape C,H,W) to read it at")
            folder = path / "test" if (path / "test").is_dir() else path
            c, h, w = spec.input_shape
            if h != w or c not in (1, 3):
                raise ConfigError(f"image folders are read as square 1- or 3-channel images; the input shape is "
                                  f"{spec.input_shape}: pass the test data as a .npz file instead")
            split, _ = read_image_folder(folder, h, c)
            return split
        if path.suffix != ".npz":
            raise ConfigError(f"test data {str(path)!r} must be a .npz file (arrays x, y) or an image folder")
        split = read_npz(path)
    elif isinstance(test_data, (tuple, list)):
        if len(test_data) not in (1, 2):
            raise ConfigError(f"test data must be (x, y) or (x,) (got a sequence of {len(test_data)})")
        split = from_arrays(test_data[0], test_data[1] if len(test_data) == 2 else None)
    elif isinstance(test_data, torch.utils.data.DataLoader):
        split = from_batches(test_data, "DataLoader")
    elif isinstance(test_data, torch.utils.data.Dataset):
        split = from_batches(torch.utils.data.DataLoader(test_data, batch_size=256), "Dataset")
    elif isinstance(test_data, Split):
        split = test_data
    else:
        raise ConfigError(f"test data of type {type(test_data).__name__} is not understood; pass (x, y), (x,), a "
                          f"Dataset, a DataLoader, a .npz file or an image folder")
    if len(split) == 0:
        raise ConfigError("the test data is empty; pass some inputs, or no test data at all")
    return split


def check_test_data(split: Split, spec: InputSpec) -> None:
    """The test inputs must have the spec's shape and the labels its classes: refused before training."""
    shape = tuple(split.x.shape[1:])
    if shape != spec.input_shape:
        raise ConfigError(f"test inputs have shape {shape} but the model takes {spec.input_shape}; "
                          f"pass test data of the model's input shape")
    if split.x.is_floating_point() and not bool(torch.isfinite(split.x).all()):
        raise ConfigError("test inputs contain NaN or Inf values; clean them first")
    if split.y is not None and spec.num_classes is not None and len(split.y):
        low, high = int(split.y.min()), int(split.y.max())
        if low < 0 or high >= spec.num_classes:
            raise ConfigError(f"test labels run from {low} to {high} but the teacher has {spec.num_classes} classes "
                              f"(0 to {spec.num_classes - 1})")
