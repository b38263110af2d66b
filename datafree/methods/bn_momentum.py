"""Fast-DFKD's BatchNorm-statistics term `bn_mmt` (Fang et al., AAAI 2022; zju-vipa/Fast-Datafree,
DeepInversionHook with `mmt_rate`): a term with state.

The plain `bn` term asks one batch to match the teacher's running statistics. Fast-DFKD draws only
a few steps per round, so it asks the *blend* of this batch's statistics with those of earlier
rounds (momentum 0.9) to match instead: ‖σ²_run − ((1−m)σ²_batch + m·σ²_past)‖₂ +
‖μ_run − ((1−m)μ_batch + m·μ_past)‖₂ per layer. A batch then only has to cover what past batches
missed. After each round, `end_round` folds the last step's statistics into the past ones.
"""
from __future__ import annotations

import torch
from torch import nn

from datafree.batch import Batch
from datafree.methods.terms import TermContext, term_module


@term_module("bn_mmt", ("generator",), needs=("teacher.bn_stats",))
class MomentumBatchNormTerm(nn.Module):
    """BatchNorm statistics blended with earlier rounds' (Fast-DFKD, momentum method.args.bn_momentum)."""

    def __init__(self, context: TermContext) -> None:
        super().__init__()
        from datafree.methods import METHODS

        self.momentum = METHODS.get(context.config.method.name).settings(context.config.method.args)["bn_momentum"]
        layers = context.teacher.bn_layers
        for i, layer in enumerate(layers):
            self.register_buffer(f"mean{i}", torch.zeros_like(layer.running_mean))
            self.register_buffer(f"var{i}", torch.zeros_like(layer.running_var))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))  # past statistics exist
        self.latest: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, b: Batch) -> torch.Tensor:
        m, total = self.momentum, 0.0
        self.latest = []
        for i, (mean, var, layer) in enumerate(b.teacher.bn_stats):
            if bool(self.started):
                mean_blend = (1 - m) * mean + m * getattr(self, f"mean{i}")
                var_blend = (1 - m) * var + m * getattr(self, f"var{i}")
            else:
                mean_blend, var_blend = mean, var
            total = total + torch.linalg.vector_norm(layer.running_var - var_blend, 2) \
                + torch.linalg.vector_norm(layer.running_mean - mean_blend, 2)
            self.latest.append((mean.detach(), var.detach()))
        return total

    @torch.no_grad()
    def end_round(self) -> None:
        m = self.momentum
        for i, (mean, var) in enumerate(self.latest):
            past_mean, past_var = getattr(self, f"mean{i}"), getattr(self, f"var{i}")
            if bool(self.started):
                past_mean.mul_(m).add_((1 - m) * mean)
                past_var.mul_(m).add_((1 - m) * var)
            else:
                past_mean.copy_(mean)
                past_var.copy_(var)
        self.started.fill_(bool(self.latest) or bool(self.started))
