"""NAYER (Tran et al., CVPR 2024; tmtuan1307/NAYER, synthesis/nayer.py).

The generator (`generators/nayer.py`) takes class embeddings through a *noisy layer* that is
re-initialised before every round, so a few steps give new samples while the rest of the
generator keeps what it learned. Each iteration runs `method.args.rounds` rounds (g_loops 2; 10
during warm-up, gwp_loops): re-initialise the noisy layer, draw a class-balanced batch of targets,
optimise the whole generator with a fresh Adam for `g_steps` steps (40 on CIFAR-100, 30 on CIFAR-10)
on oh 0.5 + bn 10 + adv_dkl 1.33 (no adversarial term in warm-up), keep the best batch in the
pool. The whole generator is re-created every `g_life` iterations (epochs in the reference); the
student distils on the pool (KL at T = 20).

Deviations: the decision-adversarial term (`adv_dkl`) is computed at method.temperature (20,
the student's KL temperature) where the reference computes it at T = 1 (not re-tuned here).
Class embeddings are fixed random vectors, not text embeddings of class names (see
generators/nayer.py); the pool (generator.replay_size / replay_mb) keeps a uniform sample of all
rounds once full; iterations stand for the reference's epochs, with `s_steps` student updates each;
under torchrun it is refused.
"""
import math

from datafree.errors import ConfigError
from datafree.methods import Method, register_method
from datafree.methods.inversion import POOL_DEFAULTS, balanced_targets, in_warmup, pool_student_turn, synthesise


def nayer_rounds(trainer, player) -> bool:
    settings = trainer.method.settings(trainer.cfg.method.args)
    generator = trainer.generator
    if not hasattr(generator, "reset_noise"):
        raise ConfigError("method 'nayer' needs generator 'nayer' (a noisy layer to re-initialise); "
                          "set generator.name = \"nayer\"")
    step, life = trainer.step, settings["g_life"]
    if step > 0 and (step % life == 0 or (step - trainer.cfg.method.warmup) % life == 0):
        # The reference's rule: a new generator at multiples of g_life and at multiples of g_life after the
        # warm-up (twice per g_life when the warm-up is not a multiple of it, as in its scripts).
        generator.reinitialise()
    for _ in range(settings["warmup_rounds"] if in_warmup(trainer) else settings["rounds"]):
        generator.reset_noise()
        player.optimizer.state.clear()  # a fresh Adam for every round
        targets = balanced_targets(trainer)
        trainer.pool.add(synthesise(trainer, player, lambda: generator(None, targets), targets, [player.optimizer]))
    return True


register_method(Method(
    name="nayer",
    summary="noisy-layer generator re-initialised every round, class-balanced: oh 0.5 + bn 10 + adv_dkl 1.33; "
            "student KL(T=20) on the pool",
    data="synthetic",
    terms={"generator": {"oh": 0.5, "bn": 10.0, "adv_dkl": 1.33}, "student": {"kl": 1.0}},
    defaults={**POOL_DEFAULTS, "trainer.g_steps": 40, "trainer.s_steps": 400, "method.warmup": 20,
              "generator.name": "nayer",
              "generator.optim": {"name": "adam", "lr": 4e-3, "betas": [0.5, 0.999], "weight_decay": 0.0,
                                  "schedule": "constant"}},
    args={"rounds": 2, "warmup_rounds": 10, "g_life": 10},
    ranges={"warmup_rounds": (0, math.inf)},
    turns={"generator": nayer_rounds, "student": pool_student_turn},
    fills_pool=True,
    reference="Tran et al. CVPR 2024; tmtuan1307/NAYER",
))
