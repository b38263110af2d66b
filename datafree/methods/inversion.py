"""Synthesis rounds: the model-inversion schedule that CMI, Fast-DFKD and NAYER share.

In their reference code (zju-vipa/CMI, zju-vipa/Fast-Datafree, tmtuan1307/NAYER) the generator
does not chase the student step by step as in DFAD. Each *round* draws target classes (and, for
CMI and Fast, latent codes that are optimised too), optimises a generator for a number of steps
on the generator terms (BatchNorm statistics, one-hot, decision-adversarial, ...), and keeps the
batch with the lowest loss in a data pool that holds every round's batch. The student trains on
that pool alone. Here a round is the generator player's turn (its `g_steps` inner steps), the pool
is the run's replay pool (`Method.fills_pool`), and the student's `s_steps` updates draw from it.
During the first `method.warmup` iterations rounds run without adversarial terms and the student
waits.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn

from datafree.batch import Batch
from datafree.errors import ConfigError
from datafree.methods.terms import TERMS

if TYPE_CHECKING:
    from datafree.players import Player
    from datafree.trainer import Trainer


# What CMI, Fast and NAYER share: the student distils at T = 20 on a long pool of the rounds' best
# batches, augmented with shifts.
POOL_DEFAULTS = {"method.temperature": 20.0, "generator.replay_size": 131072, "generator.augment": ["shift"]}


def in_warmup(trainer: "Trainer") -> bool:
    return trainer.step < trainer.cfg.method.warmup


def round_weights(trainer: "Trainer", player: "Player") -> dict[str, float]:
    """The generator's weights for this round: without adversarial terms during warm-up."""
    if not in_warmup(trainer):
        return player.weights
    return {name: w for name, w in player.weights.items() if not TERMS.get(name).adversarial}


def random_targets(trainer: "Trainer") -> torch.Tensor:
    """Target classes drawn uniformly, sorted (as CMI and Fast draw them)."""
    n, k = trainer.cfg.trainer.batch_size, trainer.info.num_classes
    return torch.randint(0, k, (n,), device=trainer.device).sort().values


def balanced_targets(trainer: "Trainer") -> torch.Tensor:
    """Every class equally often, the remainder at random (NAYER's class-balanced batches)."""
    n, k = trainer.cfg.trainer.batch_size, trainer.info.num_classes
    rest = torch.randint(0, k, (n % k,), device=trainer.device)
    return torch.cat([torch.arange(k, device=trainer.device).repeat(n // k), rest])


def synthesise(trainer: "Trainer", player: "Player", generate: Callable[[], torch.Tensor], targets: torch.Tensor,
               optimizers: list[torch.optim.Optimizer], after_backward: Callable[[], None] | None = None,
               on_best: Callable[[], None] | None = None) -> torch.Tensor:
    """Optimise for `player.repeats` steps what `generate()` depends on; return the batch of the
    step with the lowest loss (added to the pool by the caller). The teacher sees an augmented
    view of each batch, as in the references (crop/shift and flip)."""
    trainer.set_trainable(player)  # (the student's last update froze the generator)
    weights = round_weights(trainer, player)
    nets, captures, temperature = (trainer.nets_for(player), trainer.captures[player.name],
                                   trainer.cfg.method.temperature)
    augment = trainer.synthetic.augment
    best_cost, best = math.inf, None
    for _ in range(player.repeats):
        with trainer.autocast():
            x = generate().float()
            view = augment(x) if augment is not None else x
            batch = Batch(player.name, view.contiguous(memory_format=trainer.memory_format), nets, captures,
                          temperature, sampled_labels=targets)
            batch.source = x  # the un-augmented samples, for terms that make views of their own (CMI)
            total, terms = trainer.losses(player, batch, weights)
        trainer.counters["synthetic_samples"] += len(x)
        cost = float(total.detach())
        if cost < best_cost:
            best_cost, best = cost, x.detach()
            if on_best is not None:
                on_best()
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        total.backward()  # no GradScaler: these methods refuse fp16 (config check), bf16 and fp32 need none
        if player.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for o in optimizers for g in o.param_groups for p in g["params"]],
                                           player.optim.grad_clip)
        if after_backward is not None:
            after_backward()
        for optimizer in optimizers:
            optimizer.step()
        values = {f"loss/{player.name}/{k}": v.detach().float() for k, v in terms.items()}
        values[f"loss/{player.name}/total"] = total.detach().float()
        trainer.reporter.accumulate(values)
    return best


def forget_optimizer_state(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
    """A fresh optimizer for these parameters (moments and step count), as a round's new Adam."""
    for p in params:
        optimizer.state.pop(p, None)


def pool_student_turn(trainer: "Trainer", player: "Player") -> bool:
    """The student trains on the pool once the warm-up is over (its schedule starts then)."""
    if in_warmup(trainer) or len(trainer.pool) == 0:
        return False
    for _ in range(player.repeats):
        trainer.reporter.accumulate(trainer.update(player))
    return True


def latent_codes(trainer: "Trainer", nz: int) -> nn.Parameter:
    """Fresh latent codes to optimise with the generator (CMI, Fast), which is called on them alone."""
    if trainer.generator.conditional:
        raise ConfigError(f"method '{trainer.cfg.method.name}' optimises the latent codes of an unconditional "
                          f"generator; generator '{trainer.cfg.generator.name}' needs class labels: "
                          "set generator.name = \"dcgan\"")
    return nn.Parameter(torch.randn(trainer.cfg.trainer.batch_size, nz, device=trainer.device))
