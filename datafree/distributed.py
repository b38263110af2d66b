"""torch.distributed set-up for `torchrun --nproc_per_node N -m datafree ...`.

Every player is wrapped in DistributedDataParallel, each rank draws its own noise and its own
slice of real batches, metrics are averaged across ranks, and only rank 0 writes files.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_from_env(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    if not dist.is_initialized():
        use_nccl = torch.cuda.is_available() and device != "cpu"
        if use_nccl:  # one GPU per process; object collectives place their buffers on the current device
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: nn.Module, d: Dist, device: torch.device, ignore: list[nn.Parameter] = ()) -> nn.Module:
    """DDP around `module`. Parameters in `ignore` are trained by another player and averaged
    with `average_gradients` instead: DDP expects a gradient for every parameter it manages in
    each synchronised backward, and without one it silently skips the all-reduce."""
    if not d.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    ignored = {id(p) for p in ignore}
    names = [name for name, p in module.named_parameters() if id(p) in ignored]
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def broadcast_buffers(modules: list[nn.Module], d: Dist) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP does this at the start
    of each forward through the wrapper, but forward passes since (the last update, plain calls
    that draw synthetic batches) leave each rank with statistics of its own batches."""
    if d.enabled:
        for module in modules:
            for buffer in module.buffers():
                dist.broadcast(buffer, src=0)


def broadcast_parameters(module: nn.Module, d: Dist) -> None:
    """Give every rank rank 0's parameters (after each rank re-drew them from its own random stream)."""
    if d.enabled:
        with torch.no_grad():
            for p in module.parameters():
                dist.broadcast(p, src=0)


def reducible(values: torch.Tensor) -> torch.Tensor:
    """A copy of `values` where the backend can reduce it: NCCL reduces GPU tensors only."""
    if dist.get_backend() == "nccl":
        return values.to(torch.device("cuda", torch.cuda.current_device()), copy=True)
    return values.clone()


def mean_across_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        reduced = reducible(values)
        dist.all_reduce(reduced)
        values = reduced.to(values.device) / d.world_size
    return values


def sum_across_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        reduced = reducible(values)
        dist.all_reduce(reduced)
        values = reduced.to(values.device)
    return values


def average_gradients(params: list[nn.Parameter], d: Dist) -> None:
    """All-reduce gradients of parameters outside any DDP module (a feature adapter)."""
    if d.enabled:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= d.world_size


def any_rank(flag: torch.Tensor | bool, d: Dist) -> bool:
    """Whether `flag` holds on any rank, answered alike on every rank. Decisions that end a run
    (a NaN loss, a stop signal) must be taken by all ranks together: a rank that stops alone
    leaves the others waiting forever in their next collective."""
    if not d.enabled:
        return bool(flag)
    flag = reducible(torch.as_tensor(flag).to(torch.int32))  # all_reduce has no bool MAX on every backend
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag)


def gather_objects(obj: object, d: Dist) -> list[object]:
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: object, d: Dist) -> object:
    """Rank 0's `obj` on every rank (e.g. the run directory it chose)."""
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
