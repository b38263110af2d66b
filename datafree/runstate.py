"""A run's state for exact resume: every module each player owns, every optimizer, scheduler and
fp16 scaler, the RNG states of every process, the data position, the replay pool, the counters.

`save` refuses weights that went non-finite, so a checkpoint on disk is always one to go back to.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from datafree import checkpoint
from datafree.distributed import broadcast_buffers, gather_objects
from datafree.errors import CheckpointError, ConfigError, DatafreeError, DivergenceError

if TYPE_CHECKING:
    from datafree.trainer import Trainer


def state_dict(trainer: "Trainer") -> dict[str, Any]:
    device, dist = trainer.device, trainer.dist
    rng = {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate(),
           "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
    return {
        "step": trainer.step,
        "config": trainer.cfg.to_dict(),
        "notes": trainer.notes,
        "counters": dict(trainer.counters),
        "models": {name: module.state_dict() for name, module in trainer.modules().items()},
        "players": {p.name: p.state_dict() for p in trainer.players},
        "rng": gather_objects(rng, dist),  # one entry per rank
        "data_position": trainer.stream.position if trainer.stream is not None else 0,
        "replay": gather_objects(trainer.pool.state_dict(), dist) if trainer.pool is not None else None,  # per rank
        "reporter": trainer.reporter.state_dict(),
        "last_eval": dict(trainer.last_eval),
        "evaluations": list(trainer.evaluations),
    }


def load_state_dict(trainer: "Trainer", state: dict[str, Any]) -> None:
    """Restore a run checkpoint; one that does not fit this run is refused with a one-line error."""
    try:
        restore(trainer, state)
    except (DatafreeError, CheckpointError):
        raise
    except Exception as e:  # noqa: BLE001  missing keys, wrong types or shapes: a checkpoint of another run
        text = (str(e).splitlines() or [type(e).__name__])[0][:160]
        raise CheckpointError(f"the run checkpoint does not fit this run ({type(e).__name__}: {text}); it was "
                              f"written by another run or damaged: start a new run, or resume the run it came "
                              f"from") from None
    for name, module in trainer.modules().items():
        for key, value in module.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"the latest run checkpoint holds NaN/Inf values ({name}.{key}), "
                                      f"so it is not one to resume from: move it out of checkpoints/ "
                                      f"to resume from the one before")


def restore(trainer: "Trainer", state: dict[str, Any]) -> None:
    dist = trainer.dist
    if len(state["rng"]) != dist.world_size:
        raise ConfigError(f"this run was saved by {len(state['rng'])} process(es) and cannot continue exactly on "
                          f"{dist.world_size}; resume it with torchrun --nproc_per_node {len(state['rng'])}")
    trainer.step = state["step"]
    trainer.counters.update(state["counters"])
    modules = trainer.modules()
    for name, sd in state["models"].items():
        modules[name].load_state_dict(sd)
    for player in trainer.players:
        player.load_state_dict(state["players"][player.name])
        check_optimizer_state(player)
    rng = state["rng"][dist.rank]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] is not None and trainer.device.type == "cuda":
        torch.cuda.set_rng_state(rng["cuda"], trainer.device)
    set_numpy_rng_state(rng["numpy"])
    random.setstate(rng["python"])
    if trainer.stream is not None:
        trainer.stream.position = state["data_position"]
    if state["replay"] is not None and trainer.pool is not None:
        trainer.pool.load_state_dict(state["replay"][dist.rank], trainer.device)
    trainer.reporter.load_state_dict(state["reporter"])
    trainer.last_eval = dict(state["last_eval"])
    trainer.evaluations = list(state["evaluations"])


def check_optimizer_state(player) -> None:
    """torch loads an optimizer's state without comparing it with the parameters; a momentum buffer
    of another shape would only fail (or broadcast silently) at the next update."""
    for group in player.optimizer.param_groups:
        for parameter in group["params"]:
            for key, value in player.optimizer.state.get(parameter, {}).items():
                if torch.is_tensor(value) and value.dim() > 0 and value.shape != parameter.shape:
                    raise ValueError(f"the {player.name}'s optimizer state {key!r} has shape {tuple(value.shape)} "
                                     f"for a parameter of shape {tuple(parameter.shape)}")


def sync_buffers(trainer: "Trainer") -> None:
    """Give every rank rank 0's buffers (BatchNorm statistics) before they are read or saved."""
    broadcast_buffers(list(trainer.modules().values()), trainer.dist)


def check_finite_weights(trainer: "Trainer") -> None:
    """A finite loss can still step into NaN weights (an Inf gradient); never save those."""
    for name, module in trainer.modules().items():
        owner = name.split(".")[0]
        for key, value in module.state_dict().items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise DivergenceError(f"step {trainer.step}: the {owner}'s {key} holds NaN/Inf values; the run stopped "
                                      f"without saving them; {last_good_checkpoint(trainer.run_dir)} (lower the "
                                      f"learning rate or set {owner}.optim.grad_clip)")


def save(trainer: "Trainer") -> Path | None:
    """Write a run checkpoint (rank 0; every rank takes part in gathering the RNG states)."""
    check_finite_weights(trainer)
    sync_buffers(trainer)
    state = state_dict(trainer)
    if trainer.run_dir is None or not trainer.dist.is_main:
        return None
    path = checkpoint.save_run(state, trainer.run_dir, trainer.step, trainer.cfg.trainer.keep_checkpoints)
    if trainer.on_checkpoint is not None:
        trainer.on_checkpoint(path)  # may move the run (an --overwrite run's first checkpoint replaces the old run)
        path = checkpoint.run_checkpoint_path(trainer.run_dir, trainer.step)
    return path


def last_good_checkpoint(run_dir: Path | None) -> str:
    found = checkpoint.list_run_checkpoints(run_dir) if run_dir is not None else []
    return f"its last good checkpoint is {found[-1]}" if found else "no checkpoint had been saved yet"


def numpy_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_numpy_rng_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
