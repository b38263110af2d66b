"""Reading a folder of images sorted into one subfolder per class (`<folder>/<class>/<image>`).

Classes are numbered the way torchvision's ImageFolder does (sorted folder names), except that
when every folder name is a whole number that number is the class index: `0/ 1/ … 10/` then
mean classes 0 … 10, not the string order 0, 1, 10, 2, …
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from datafree.data import Split
from datafree.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def class_folders(folder: Path) -> list[tuple[int, Path]]:
    """(class index, subfolder) pairs of an image folder."""
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise ConfigError(f"image folder {str(folder)!r} has no class subfolders; expected {folder}/<class>/<image>")
    if all(p.name.isdigit() for p in subfolders):
        return sorted(((int(p.name), p) for p in subfolders), key=lambda pair: pair[0])
    return list(enumerate(subfolders))


def read_image_folder(folder: Path, image_size: int, channels: int = 3) -> tuple[Split, list[str]]:
    """All images under `folder/<class>/`, resized to image_size² with `channels` (1 or 3), as uint8."""
    from PIL import Image, UnidentifiedImageError

    classes = class_folders(folder)
    images, labels = [], []
    for index, subfolder in classes:
        files = sorted(p for p in subfolder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ConfigError(f"class folder {str(subfolder)!r} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                              f"add some or remove the folder")
        for path in files:
            try:
                with Image.open(path) as img:
                    img = img.convert("L" if channels == 1 else "RGB").resize((image_size, image_size), Image.BILINEAR)
                    array = np.asarray(img, dtype=np.uint8)
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise ConfigError(f"image {str(path)!r} cannot be read ({type(e).__name__}); "
                                  f"replace or remove that file") from None
            images.append(array[None] if channels == 1 else array.transpose(2, 0, 1))
            labels.append(index)
    x = torch.from_numpy(np.stack(images))
    return Split(x, torch.tensor(labels, dtype=torch.long)), [p.name for _, p in classes]
