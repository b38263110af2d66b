"""Fast-DFKD (Fang et al., AAAI 2022; zju-vipa/Fast-Datafree fast_meta.py, `--method fast_meta`).

A generator initialisation is meta-learned so that a few steps from it give a new batch. Each
round: copy the shared generator, draw fresh latent codes z and target classes, optimise the copy
and z for `g_steps` steps (2, 5 or 10) on adv_dkl 1.1 + bn_mmt 10 + oh 0.4 (oh against the drawn
targets), then move the shared generator towards the result with first-order MAML: the copy's
gradients of every inner step are summed into the shared generator's and one Adam step is taken
(`is_maml 1`; the meta learning rate is the inner one × g_steps). BatchNorm statistics are matched
with momentum 0.9 across rounds (`bn_mmt`), the generator's first layer is re-initialised once at
60% of the run after warm-up (`reset_l0`), the round's best batch joins the pool, and the student
distils on the whole pool (KL at T = 20). The first `method.warmup` rounds synthesise only.

Deviations: the decision-adversarial term (`adv_dkl`) is computed at method.temperature (20,
the student's KL temperature) where the reference computes it at T = 1 (not re-tuned here).
One round per iteration with `s_steps` student updates after it (the reference: one
round per epoch of 400 student steps; the digits configs use fewer student steps per round and
more rounds, so that the pool grows at a CPU budget); the pool holds at most
generator.replay_size samples / replay_mb megabytes, once full a uniform sample of all rounds (the
reference keeps every round on disk);
the student trains in train mode on pool batches with the project's shift augmentation where
the reference applies its data set's crop + flip transform; under torchrun it is refused.
"""
import copy

import torch

from datafree.methods import (
    Method,
    bn_momentum,  # noqa: F401  (registers the bn_mmt term)
    register_method,
)
from datafree.methods.inversion import (
    POOL_DEFAULTS,
    forget_optimizer_state,
    latent_codes,
    pool_student_turn,
    random_targets,
    synthesise,
)


def fast_round(trainer, player) -> bool:
    settings = trainer.method.settings(trainer.cfg.method.args)
    meta = trainer.generator
    warmup, steps = trainer.cfg.method.warmup, trainer.cfg.trainer.steps
    if settings["reset_l0"] and trainer.step == warmup + int(0.6 * (steps - warmup)):
        first = next(m for m in meta.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
        torch.nn.init.normal_(first.weight, 0.0, 0.02)  # the reference's reset_l0 (the generator's first layer)
        if first.bias is not None:
            torch.nn.init.zeros_(first.bias)
        forget_optimizer_state(player.optimizer, list(first.parameters()))
    trainer.set_trainable(player)  # the copy must be trainable: the student's last update froze the generator
    fast = copy.deepcopy(meta)
    z = latent_codes(trainer, meta.nz)
    inner = torch.optim.Adam([{"params": fast.parameters()}, {"params": [z], "lr": settings["lr_z"]}],
                             lr=settings["inner_lr"], betas=(0.5, 0.999))
    player.optimizer.zero_grad(set_to_none=True)

    def accumulate_meta_gradient() -> None:  # first-order MAML: Σ of the copy's gradients over the round
        for shared, copied in zip(meta.parameters(), fast.parameters()):
            if copied.grad is not None:
                shared.grad = copied.grad.clone() if shared.grad is None else shared.grad + copied.grad

    best = synthesise(trainer, player, lambda: fast(z), random_targets(trainer), [inner],
                      after_backward=accumulate_meta_gradient)
    player.optimizer.step()
    if "bn_mmt" in player.terms:  # absent when the teacher has no BatchNorm (or its weight is 0)
        player.terms["bn_mmt"].end_round()
    trainer.pool.add(best)
    return True


register_method(Method(
    name="fast",
    summary="meta-learned generator, a few steps per batch: adv_dkl 1.1 + bn_mmt 10 + oh 0.4; "
            "student KL(T=20) on the pool",
    data="synthetic",
    terms={"generator": {"adv_dkl": 1.1, "bn_mmt": 10.0, "oh": 0.4}, "student": {"kl": 1.0}},
    defaults={**POOL_DEFAULTS, "trainer.g_steps": 2, "trainer.s_steps": 20, "method.warmup": 20,
              # meta learning rate = inner 5e-3 × g_steps (2), constant, as the reference
              "generator.optim": {"name": "adam", "lr": 0.01, "betas": [0.5, 0.999], "weight_decay": 0.0,
                                  "schedule": "constant"}},
    args={"inner_lr": 5e-3, "lr_z": 0.015, "bn_momentum": 0.9, "reset_l0": True},
    ranges={"bn_momentum": (0.0, 1.0)},
    turns={"generator": fast_round, "student": pool_student_turn},
    fills_pool=True,
    reference="Fang et al. AAAI 2022; zju-vipa/Fast-Datafree",
))
