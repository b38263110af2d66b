"""CMI's contrastive term `cr` (Fang et al., IJCAI 2021; zju-vipa/CMI contrastive.py): a term
with state — a projection head trained with the generator and a memory bank of past embeddings.

Each synthesised sample is seen twice by the teacher: the round's view (crop/shift + flip) and a
local view (a random resized crop, scale 0.25–1, + flip). Its *instance statistics* — the
per-sample channel means of the teacher's stage outputs (the last activation at each resolution,
read by hooks: datafree/hooks.py) — are projected by a small MLP head onto the unit sphere, and an
InfoNCE loss asks each local view to pick out its own global view among the other samples' and
among negatives from a bank of earlier rounds' features. Minimising it pushes new samples away
from everything synthesised before: diversity. The bank keeps the best batch of every round
(`remember`, called by the method's round).

Deviations: the statistics are those of the stage outputs for every teacher with convolutional
stages (CMI's reference reads a ResNet-34's four block outputs, but every BatchNorm input of its
other teachers): all 4,800 BatchNorm channels of a ResNet-18 made the head a 4,800 × 4,800 layer
and CMI on the rgb32 pair 4.5× slower (one round: 58–66 s against 13 s); a stage at 1 × 1 (a
ResNet-18's last block at 32 × 32 input) is not read, as for attention transfer. A teacher without
stages (feature vectors) gives its BatchNorm inputs' means. The head trains in the generator
player's optimizer (Adam, β = 0.5, 0.999) where CMI gives it an Adam of its own (β = 0.9, 0.999)
at the same learning rate; the bank holds fp16 features, at most method.args.bank_size of them and
bank_mb megabytes (CMI: 40,960 in fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from datafree.batch import Batch
from datafree.methods.terms import TermContext, term_module


@term_module("cr", ("generator",), needs=("teacher.instance", "image"))
class ContrastiveTerm(nn.Module):
    """CMI's contrastive loss over instance statistics, with a memory bank of past samples."""

    def __init__(self, context: TermContext) -> None:
        super().__init__()
        from kornia import augmentation as K

        from datafree.methods import METHODS

        settings = METHODS.get(context.config.method.name).settings(context.config.method.args)
        self.temperature, self.negatives = settings["cr_temperature"], settings["negatives"]
        with torch.no_grad():
            x = torch.zeros(2, *context.info.input_shape, device=context.device)
            dim = context.teacher(x, {"instance"}).instance.shape[1]
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, settings["head_dim"]))
        # local and global features of past samples, in fp16, at most bank_size of them and bank_mb megabytes
        entries = max(1, min(settings["bank_size"], int(settings["bank_mb"] * 2**20 // (2 * dim * 2))))
        self.register_buffer("bank", torch.zeros(entries, 2 * dim, dtype=torch.float16))
        self.register_buffer("stored", torch.zeros((), dtype=torch.long))  # features ever added
        size = tuple(context.info.input_shape[-2:])
        self.local_view = nn.Sequential(K.RandomResizedCrop(size=size, scale=(0.25, 1.0)), K.RandomHorizontalFlip())
        self.latest: torch.Tensor | None = None  # this step's features
        self.best: torch.Tensor | None = None  # those of the round's best step so far

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(features), dim=1)

    def forward(self, b: Batch) -> torch.Tensor:
        global_features = b.teacher.instance
        local_features = b.nets.teacher(self.local_view(b.source), {"instance"}).instance
        self.latest = torch.cat([local_features, global_features], 1).detach()
        n, held = len(global_features), int(min(self.stored, len(self.bank)))
        cached_local = cached_global = global_features[:0]
        if held:
            index = torch.randperm(held, device=self.bank.device)[: self.negatives]
            cached_local, cached_global = self.bank[index].float().chunk(2, dim=1)
        local = self.project(torch.cat([local_features, cached_local]))
        global_ = self.project(torch.cat([global_features, cached_global]))
        logits = local @ global_.detach().T / self.temperature
        loss = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
        return loss[:n].mean() + loss[n:].mean() if held else loss.mean()

    def keep(self) -> None:
        """The step just taken is the round's best: keep its features."""
        self.best = self.latest

    @torch.no_grad()
    def remember(self) -> None:
        """Add the round's best features to the bank (a ring buffer)."""
        if self.best is None:
            return
        kept = self.best[-len(self.bank):]  # a bank smaller than a batch keeps the batch's last rows
        slots = (int(self.stored) + torch.arange(len(kept), device=self.bank.device)) % len(self.bank)
        self.bank[slots] = kept.to(self.bank.dtype)
        self.stored += len(kept)
        self.best = None
