"""Checkpoints: one file format for trained models, one for resumable runs; safe loading; atomic writes.

A **model checkpoint** (teacher or student) holds the model's registry name and arguments, its
weights, the data set's `DataInfo` and the measured test accuracy, so `datafree distill
--teacher teacher.pt` needs nothing else. A **run checkpoint** holds everything to continue a
run exactly (every player, optimizer, scheduler, RNG state, replay pool, config).

Loading uses `torch.load(weights_only=True)`: tensors and plain containers only, so a file can
never run code. Writing goes to a temporary file that is flushed, fsynced and renamed, so a crash
mid-write never leaves a corrupt file under the final name.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree.data import DataInfo
from datafree.errors import CheckpointError

MODEL_FORMAT = "datafree.model/1"
RUN_FORMAT = "datafree.run/1"


@dataclass
class ModelCheckpoint:
    model: nn.Module
    arch: dict[str, Any] | None  # {"name": registry name, "args": {...}}; None for a custom nn.Module
    info: DataInfo
    metrics: dict[str, float]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` through a temporary file: the final name only ever holds a whole file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def safe_load(path: str | Path, expected_format: str) -> dict[str, Any]:
    """Load a datafree checkpoint without executing code from it, or raise a CheckpointError
    that says what is wrong with the file and what to do."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "global" in str(e).lower():  # weights_only refused a class: the file pickles objects
            raise CheckpointError(
                f"{path} contains pickled Python objects (a whole nn.Module?); datafree refuses to unpickle them "
                f"because that can run code. Save weights instead: datafree.save_model(model, info, path)"
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or not a torch file): {short(e)}") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError,
            IndexError, TypeError, UnicodeDecodeError, MemoryError, OverflowError) as e:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated): {short(e)}") from None
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(
            f"{path} is not a datafree checkpoint (a bare state_dict?); wrap weights with datafree.save_model(model, info, path)"
        )
    if obj["format"] != expected_format:
        kind = {MODEL_FORMAT: "a model checkpoint", RUN_FORMAT: "a run checkpoint"}.get(obj["format"], repr(obj["format"]))
        want = {MODEL_FORMAT: "a model checkpoint (teacher.pt / student.pt)", RUN_FORMAT: "a run checkpoint (checkpoints/step_*.pt)"}[expected_format]
        raise CheckpointError(f"{path} is {kind}, but {want} is needed here")
    return obj


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# Model checkpoints


def save_model(model: nn.Module, info: DataInfo, path: str | Path, arch: dict[str, Any] | None = None,
               metrics: dict[str, float] | None = None) -> Path:
    """Write a model checkpoint. `arch` = {"name": registry name, "args": {...}} lets
    `load_model` rebuild the model; without it the caller must supply the module to load into."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save({"format": MODEL_FORMAT, "arch": arch, "state_dict": state, "data": info.to_dict(),
                 "metrics": dict(metrics or {})}, path)
    return Path(path)


def load_model(path: str | Path, model: nn.Module | None = None) -> ModelCheckpoint:
    """Read a model checkpoint; build the model from its registry name, or load into `model`."""
    from datafree.models import create_model

    obj = safe_load(path, MODEL_FORMAT)
    try:
        info = DataInfo.from_dict(obj["data"])
        arch = obj["arch"]
        if model is None:
            if arch is None:
                raise CheckpointError(f"{path} holds weights of a custom model; pass the nn.Module to load them into")
            model = create_model(arch["name"], info.num_classes, info.input_shape, **arch.get("args", {}))
        model.load_state_dict(obj["state_dict"])
    except (KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is a damaged model checkpoint (missing {short(e)})") from None
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model ({short(e)})") from None
    return ModelCheckpoint(model, arch, info, dict(obj.get("metrics", {})))


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Run checkpoints


def run_checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / f"step_{step:08d}.pt"


def list_run_checkpoints(run_dir: Path) -> list[Path]:
    folder = run_dir / "checkpoints"
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(r"step_\d{8}\.pt", p.name))


def save_run(state: dict[str, Any], run_dir: Path, step: int, keep: int) -> Path:
    path = run_checkpoint_path(run_dir, step)
    atomic_save({"format": RUN_FORMAT, **state}, path)
    for old in list_run_checkpoints(run_dir)[:-keep]:
        old.unlink()
    return path


def load_latest_run(run_dir: Path) -> dict[str, Any]:
    found = list_run_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no run checkpoint in {run_dir / 'checkpoints'}; nothing to resume (start the run without --resume)")
    return safe_load(found[-1], RUN_FORMAT)
