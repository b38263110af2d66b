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
        dist.init_process_group("nccl" if use_nccl else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: nn.Module, d: Dist, device: torch.device) -> nn.Module:
    if not d.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def mean_across_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= d.world_size
    return values


def sum_across_ranks(values: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def average_gradients(params: list[nn.Parameter], d: Dist) -> None:
    """All-reduce gradients of parameters outside any DDP module (a feature adapter)."""
    if d.enabled:
        for p in params:
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= d.world_size


def gather_objects(obj: object, d: Dist) -> list[object]:
    if not d.enabled:
        return [obj]
    out: list[object] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
