"""Where the student's synthetic batches come from: fresh generator samples, optionally mixed
with a replay pool of past samples and augmented (datafree/augment.py).

A replay pool keeps the student from forgetting regions of input space that the generator
visited earlier and then left (the generator keeps moving to where the student is weakest).
Augmentation (geometric, applied in the normalised space) multiplies what each sample teaches.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from datafree.config import replay_count


class ReplayPool:
    """Past synthetic samples on the training device, stored in fp16 (fp32 for samples beyond fp16's
    range), holding at most `max_samples` and at most `max_bytes`. It grows as it fills, so a short run
    never allocates the whole budget.

    Once full, `policy` says which samples it keeps. "reservoir" (the default) keeps a uniform sample of
    every sample ever added (Vitter's algorithm R), as CMI, Fast-DFKD and NAYER keep every round: the
    student keeps seeing what the generator made early on, so a generator that later narrows onto a few
    classes cannot make it forget the rest (4,000 `ours` steps on mnist5k, seeds 0 and 1: 93.6 and 95.3%
    at the end instead of 33.2 and 77.8%). "ring" keeps the most recent samples."""

    def __init__(self, max_samples: int, max_bytes: float, policy: Literal["reservoir", "ring"] = "reservoir") -> None:
        self.max_samples, self.max_bytes, self.policy = max_samples, max_bytes, policy
        self.capacity = 0  # known at the first add, from the sample size
        self.samples: torch.Tensor | None = None
        self.count = 0  # samples ever added

    def __len__(self) -> int:
        return min(self.count, self.capacity)

    def add(self, x: torch.Tensor) -> None:
        x = x.detach()
        if self.samples is None:
            # fp16 unless the first batch already reaches 1e4 (raw feature vectors): chosen once, so a
            # generator that later drifts beyond fp16's 65,504 would be stored as inf
            dtype = torch.float16 if float(x.abs().max()) < 1e4 else torch.float32
            sample_bytes = x[0].numel() * dtype.itemsize
            self.capacity = max(1, min(self.max_samples, int(self.max_bytes // sample_bytes)))
            self.samples = torch.empty(0, *x.shape[1:], device=x.device, dtype=dtype)
        n_added = len(x)
        seen = self.count + torch.arange(n_added, device=x.device)  # how many samples came before each
        if self.policy == "ring":
            slot = seen % self.capacity
        elif self.count + n_added <= self.capacity:  # not full yet: no random draw, as with the ring
            slot = seen
        else:  # the n-th sample takes a uniformly drawn slot with probability capacity / n
            slot = torch.where(seen < self.capacity, seen, (torch.rand(n_added, device=x.device) * (seen + 1)).long())
        kept = slot < self.capacity
        slot, x = last_write_wins(slot[kept], x[kept])
        needed = min(self.capacity, self.count + n_added)
        if needed > len(self.samples):  # grow (doubling) up to the capacity
            grown = torch.empty(min(self.capacity, max(needed, 2 * len(self.samples))), *self.samples.shape[1:],
                                device=self.samples.device, dtype=self.samples.dtype)
            grown[: len(self.samples)] = self.samples
            self.samples = grown
        self.samples[slot] = x.to(self.samples.dtype)
        self.count += n_added

    def sample(self, n: int) -> torch.Tensor:
        idx = torch.randint(0, len(self), (n,), device=self.samples.device)
        return self.samples[idx].float()

    def state_dict(self) -> dict:
        # clone(): a slice would carry the whole buffer's storage into the checkpoint
        held = None if self.samples is None else self.samples[: len(self)].clone()
        return {"count": self.count, "capacity": self.capacity, "samples": None if held is None else held.cpu()}

    def load_state_dict(self, state: dict, device: torch.device) -> None:
        self.count, self.capacity = state["count"], state["capacity"]
        if state["samples"] is not None:  # slot i gets back what it held when saved
            self.samples = state["samples"].to(device)


def last_write_wins(slot: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The writes of one batch, keeping only the last sample aimed at each slot: an indexed assignment
    with repeated indices leaves which one lands unspecified (it differs between devices)."""
    order = torch.argsort(slot, stable=True)
    slot = slot[order]
    last = torch.ones_like(slot, dtype=torch.bool)
    last[:-1] = slot[1:] != slot[:-1]
    return slot[last], x[order[last]]


class SyntheticSource:
    """Student/discriminator batches from the generator: `replay_fraction` of each batch from the
    pool once it holds enough samples, the rest fresh; then augmentation."""

    def __init__(self, generator: nn.Module, batch_size: int, pool: ReplayPool | None, replay_fraction: float,
                 augment: nn.Module | None, pool_only: bool = False) -> None:
        self.generator, self.batch_size, self.pool, self.augment = generator, batch_size, pool, augment
        self.n_replay = replay_count(batch_size, replay_fraction) if pool is not None else 0  # (an empty pool is falsy)
        self.pool_only = pool_only  # the method's generator turn fills the pool; batches come from it alone

    @torch.no_grad()
    def batch(self) -> tuple[torch.Tensor, int]:
        """A batch, and how many of its samples the generator made just now."""
        if self.pool_only:
            x = self.pool.sample(self.batch_size)
            return (self.augment(x) if self.augment is not None else x), 0
        use_pool = self.pool is not None and len(self.pool) >= self.n_replay > 0
        n_fresh = self.batch_size - self.n_replay if use_pool else self.batch_size
        x, _ = self.generator.sample(n_fresh)
        x = x.float()  # under autocast the generator answers in half precision; pool and augmentation keep fp32
        if self.pool is not None:
            if use_pool:
                x = torch.cat([x, self.pool.sample(self.n_replay)])
            self.pool.add(x[:n_fresh])
        return (self.augment(x) if self.augment is not None else x), n_fresh
