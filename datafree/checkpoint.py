"""Checkpoints: one file format for trained models, one for resumable runs; safe loading; atomic writes.

A **model checkpoint** (teacher or student) holds the model's registry name and arguments, its
weights, the data set's `InputSpec` and the measured test accuracy, so `datafree distill
--teacher teacher.pt` needs nothing else. A **run checkpoint** holds everything to continue a
run exactly (every player, optimizer, scheduler, RNG state, replay pool, config).

Loading uses `torch.load(weights_only=True)`: tensors and plain containers only, so a file can
never run code. Writing goes through `files.atomic_write` (a temporary file, flushed, fsynced and
renamed, never written through a link), so a crash mid-write never leaves a corrupt file under the
final name. Every checkpoint carries a SHA-256 digest of its contents (torch.load does not check
the zip CRCs, so a flipped bit in the weights would otherwise load silently); a file that does not
match it is refused. The digest proves integrity, not origin: anyone can write a file with a
matching digest, so a checkpoint from someone else is data you choose to trust (it never runs
code, but a run checkpoint's config decides what a resumed run does).
"""
from __future__ import annotations

import hashlib
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree.errors import CheckpointError, DatafreeError
from datafree.files import atomic_write
from datafree.spec import InputSpec

MODEL_FORMAT = "datafree.model/1"
RUN_FORMAT = "datafree.run/1"


@dataclass
class ModelCheckpoint:
    model: nn.Module
    arch: dict[str, Any] | None  # {"name": registry name, "args": {...}}; None for a custom nn.Module
    info: InputSpec
    metrics: dict[str, float]


def atomic_save(obj: Any, path: str | Path) -> None:
    """torch.save to `path` whole or not at all, never through a symbolic link (see files.py)."""
    atomic_write(path, lambda f: torch.save(obj, f))


def safe_load(path: str | Path, expected_format: str) -> dict[str, Any]:
    """Load a datafree checkpoint without executing code from it, or raise a CheckpointError
    that says what is wrong with the file and what to do."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; check the path (relative paths start from {Path.cwd()})")
    if not path.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {path}; pass the .pt file itself")
    unreadable = (f"{path} is not a readable checkpoint (corrupt, truncated or not written by datafree); "
                  f"use an intact copy or create it again")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" in str(e).lower():  # weights_only refused a class: the file pickles objects
            raise CheckpointError(
                f"{path} contains pickled Python objects (a whole nn.Module?); datafree refuses to unpickle them "
                f"because that can run code. Save weights instead: datafree.save_model(model, info, path)"
            ) from None
        raise CheckpointError(unreadable) from None
    except Exception:  # noqa: BLE001  whatever torch.load trips over in a damaged file, the file is the problem
        raise CheckpointError(unreadable) from None
    if not isinstance(obj, dict) or "format" not in obj:
        raise CheckpointError(
            f"{path} is not a datafree checkpoint (a bare state_dict?); "
            "wrap weights with datafree.save_model(model, info, path)"
        )
    if obj["format"] != expected_format:
        kinds = {MODEL_FORMAT: "a model checkpoint", RUN_FORMAT: "a run checkpoint"}
        kind = (kinds.get(obj["format"], "of an unknown kind") if isinstance(obj["format"], str)
                else "of an unknown kind")
        want = {MODEL_FORMAT: "a model checkpoint (teacher.pt / student.pt)",
                RUN_FORMAT: "a run checkpoint (checkpoints/step_*.pt)"}[expected_format]
        raise CheckpointError(f"{path} is {kind}, but {want} is needed here")
    digest = obj.pop("digest", None)  # files written before digests were added have none
    if digest is not None and digest != content_digest(obj):
        raise CheckpointError(f"{path} is corrupt: its contents do not match the checksum saved with them; "
                              f"use an intact copy or create it again")
    return obj


def content_digest(obj: Any) -> str:
    """SHA-256 over a checkpoint's contents (tensor values, dtypes and shapes; plain values; the
    nesting), independent of device and memory layout, so it is the same before saving and after loading."""
    h = hashlib.sha256()

    def feed(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(x, dict):
            h.update(b"D%d" % len(x))
            for key in sorted(x, key=lambda k: (type(k).__name__, repr(k))):
                feed(key)
                feed(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(b"L%d" % len(x))
            for item in x:
                feed(item)
        else:
            h.update(f"{type(x).__name__}:{x!r};".encode())

    feed(obj)
    return h.hexdigest()


def sealed(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` with the digest of its contents added under "digest"."""
    return {**obj, "digest": content_digest(obj)}


def short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# ---------------------------------------------------------------------------------------------
# Model checkpoints


def save_model(model: nn.Module, info: InputSpec, path: str | Path, arch: dict[str, Any] | None = None,
               metrics: dict[str, float] | None = None) -> Path:
    """Write a model checkpoint. `arch` = {"name": registry name, "args": {...}} lets
    `load_model` rebuild the model; without it the caller must supply the module to load into."""
    model = getattr(model, "module", model)  # unwrap DDP
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_save(sealed({"format": MODEL_FORMAT, "arch": arch, "state_dict": state, "data": info.to_dict(),
                        "metrics": dict(metrics or {})}), path)
    return Path(path)


def load_model(path: str | Path, model: nn.Module | None = None) -> ModelCheckpoint:
    """Read a model checkpoint; build the model from its registry name, or load into `model`."""
    from datafree.models import abstract_model, create_model

    obj = safe_load(path, MODEL_FORMAT)
    damaged = f"{path} is a damaged model checkpoint"
    try:
        info = InputSpec.from_dict(obj["data"])
        arch = obj["arch"]
        metrics = dict(obj.get("metrics", {}))
        if model is None:
            if arch is None:
                raise CheckpointError(f"{path} holds weights of a custom model; pass the nn.Module to load them into")
            if "factory" in arch:  # rebuilding it would import and run that code: only when asked
                raise CheckpointError(f"{path} holds weights of a model built by {arch['factory']}; pass --factory "
                                      f"{arch['factory']} (this runs that code), or the nn.Module to load them into")
            # The shapes the file declares must be those of its weights before anything is allocated: a
            # damaged or crafted file declaring 3,000,000 classes is refused without building them.
            declared = abstract_model(arch["name"], info.num_classes, info.input_shape, **arch.get("args", {}))
            expected = {k: tuple(v.shape) for k, v in declared.state_dict().items()}
            held = {k: tuple(v.shape) for k, v in obj["state_dict"].items()}
            if expected != held:
                wrong = (next((k for k in expected if expected[k] != held.get(k)), None)
                         or next(iter(held.keys() - expected.keys())))
                raise CheckpointError(f"{damaged}: it declares model {arch['name']!r} for {info.num_classes} classes "
                                      f"and inputs {tuple(info.input_shape)}, but its weights do not fit that model "
                                      f"({wrong}); use an intact copy or create it again")
            model = create_model(arch["name"], info.num_classes, info.input_shape, **arch.get("args", {}))
    except CheckpointError:
        raise
    except DatafreeError as e:  # e.g. it names a model this installation does not have
        raise CheckpointError(f"{damaged} or from another datafree version: {e}") from None
    except Exception as e:  # noqa: BLE001  missing keys, wrong types: a file that was not written by save_model
        raise CheckpointError(f"{damaged} ({type(e).__name__}: {short(e)}); "
                              "use an intact copy or create it again") from None
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the model ({short(e)}); "
                              "load it into the model it was saved from") from None
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{damaged} ({type(e).__name__}: {short(e)}); "
                              "use an intact copy or create it again") from None
    return ModelCheckpoint(model, arch, info, metrics)


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


def unfinished_writes(run_dir: Path) -> list[Path]:
    """Temporary files of run-checkpoint writes that a killed process left half-done."""
    folder = run_dir / "checkpoints"
    return sorted(folder.glob(".step_*.tmp")) if folder.is_dir() else []


def save_run(state: dict[str, Any], run_dir: Path, step: int, keep: int) -> Path:
    """Write the run checkpoint of `step`, then drop all but the newest `keep` (and the temporary
    file of a write that a killed process left half-done)."""
    path = run_checkpoint_path(run_dir, step)
    atomic_save(sealed({"format": RUN_FORMAT, **state}), path)
    for old in list_run_checkpoints(run_dir)[:-keep]:
        old.unlink()
    for debris in unfinished_writes(run_dir):
        debris.unlink(missing_ok=True)
    return path


def load_latest_run(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} not found; nothing to resume "
                              "(pass the folder of a run started before)")
    found = list_run_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"no run checkpoint in {run_dir / 'checkpoints'}; nothing to resume "
                              "(start the run without --resume)")
    try:
        return safe_load(found[-1], RUN_FORMAT)
    except CheckpointError as e:
        if len(found) < 2:
            raise
        # Never deleted for the user: they decide whether the older checkpoint will do.
        raise CheckpointError(f"{e}; to resume from the one before, "
                              f"move {found[-1].name} out of {found[-1].parent}") from None
