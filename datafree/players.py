"""A player is one learner of a run, kept as one record: what it owns, what its optimizer steps,
how often it moves per iteration and, when its method needs one, its own turn.

The trainer only ever loops over a list of these records. A method that adds a learnable piece (a
projection head, a latent code, a memory bank) adds it to a player's modules: its parameters then
join that player's optimizer, and its state is saved, restored and checked with the rest, without
the trainer knowing what it is.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from datafree.config import OptimConfig

if TYPE_CHECKING:
    from datafree.batch import Batch
    from datafree.trainer import Trainer

TermFn = Callable[["Batch"], torch.Tensor]


@dataclass
class Player:
    name: str  # "generator", "discriminator" or "student": also which batch it is given
    terms: dict[str, TermFn]  # loss term name → the callable that computes it (a function or a bound module)
    weights: dict[str, float]  # loss term name → weight
    modules: dict[str, nn.Module]  # what it owns: saved, restored and checked under these names
    params: list[nn.Parameter]  # what its optimizer steps
    optim: OptimConfig
    repeats: int  # updates per iteration
    total_steps: int  # iterations of the run (the learning-rate schedule's length)
    wrapped: nn.Module | None = None  # its DDP wrapper: the others run it without gradient sync
    shared_params: list[nn.Parameter] = field(default_factory=list)  # outside any DDP wrapper: averaged by hand
    turn: Callable[["Trainer", "Player"], None] | None = None  # its method's own turn; None: `repeats` updates
    optimizer: torch.optim.Optimizer = field(init=False)
    scheduler: torch.optim.lr_scheduler.LRScheduler = field(init=False)
    scaler: torch.amp.GradScaler = field(init=False)

    def build_optimizer(self, device: torch.device, fp16: bool) -> None:
        self.optimizer, self.scheduler = build_optimizer(self.optim, self.params, self.total_steps)
        self.scaler = torch.amp.GradScaler(device.type, enabled=fp16)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


def build_optimizer(cfg: OptimConfig, params: list[nn.Parameter], total_steps: int):
    """The optimizer a config section names, with linear warm-up then cosine decay (or constant)."""
    if cfg.name == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                              weight_decay=cfg.weight_decay)
    else:
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        opt = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
