"""The discriminator path (GAN-KD) on tiny models: the discriminator learns to tell teacher answers
from a fresh student's, each player's update moves only its own networks, and R1, spectral
normalisation and every GAN loss keep the game finite. (The GAN losses' signs and gradient
directions are checked in test_losses.py.)"""
from __future__ import annotations

import math

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from test_trainer import make_trainer, params, same
from torch import nn

from datafree.batch import Batch
from datafree.monitor import Monitor
from discriminators import DISCRIMINATORS
from discriminators.losses import GAN_LOSSES

KINDS = sorted(DISCRIMINATORS.names())  # logit, conditional, feature, and any added later


def gankd_trainer(teacher_path, kind: str, method: str = "gankd", seed: int = 0, **overrides):
    torch.manual_seed(seed)  # the student's and the discriminator's initial weights
    return make_trainer(teacher_path, method, **{"discriminator.name": kind, "trainer.seed": seed, **overrides})


def split_discriminator(trainer) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(the discriminator's own parameters, its student-side adapter's)."""
    adapter = [p for m in trainer.discriminator.student_side_modules() for p in m.parameters()]
    ids = {id(p) for p in adapter}
    return [p for p in trainer.discriminator.parameters() if id(p) not in ids], adapter


@torch.no_grad()
def held_out_accuracy(trainer) -> tuple[float, float]:
    """On the test split (never trained on): the share of teacher answers the discriminator calls
    real, and of student answers it calls fake."""
    test = trainer.dataset.test
    x, y = trainer.info.normalize(test.x), test.y
    batch = Batch("discriminator", x, trainer.nets_for(trainer.player("discriminator")),
                  trainer.captures["discriminator"], trainer.cfg.method.temperature, labels=y)
    d, threshold = trainer.discriminator, trainer.gan_loss.threshold
    real = d(d.view(batch.teacher, "teacher"), y)
    fake = d(d.view(batch.student, "student"), y)
    return float((real > threshold).float().mean()), float((fake <= threshold).float().mean())


@pytest.mark.parametrize("kind", KINDS)
def test_discriminator_separates_teacher_from_a_fresh_student(digits_teacher, kind):
    trainer = gankd_trainer(digits_teacher, kind)
    before = sum(held_out_accuracy(trainer)) / 2
    for _ in range(150):
        out = trainer.update(trainer.player("discriminator"))
    on_teacher, on_student = held_out_accuracy(trainer)
    assert before < 0.7, f"{kind} separates before training ({before:.2f}): the test would prove nothing"
    assert (on_teacher + on_student) / 2 >= 0.8 and min(on_teacher, on_student) >= 0.6, (kind, on_teacher, on_student)
    # the logged accuracies (training batches) tell the same story
    assert (float(out["disc/acc_teacher"]) + float(out["disc/acc_student"])) / 2 >= 0.75, out


@pytest.mark.parametrize("kind", KINDS)
def test_each_update_moves_only_its_own_players_networks(digits_teacher, kind):
    # the adversarial term alone trains the student here, so any change to it comes through the discriminator
    trainer = gankd_trainer(digits_teacher, kind, **{"method.terms": {"student": {"ce": 0, "kl": 0}}})
    own, adapter = split_discriminator(trainer)
    assert own
    if kind == "feature":  # the student's deepest map (16 channels) is narrower than the teacher's (32)
        assert adapter
    student_before, own_before, adapter_before = params(trainer.student), [p.detach().clone() for p in own], \
        [p.detach().clone() for p in adapter]

    out = trainer.update(trainer.player("discriminator"))
    assert {"disc/acc_teacher", "disc/acc_student"} <= set(out)
    assert all(0 <= float(out[k]) <= 1 for k in ("disc/acc_teacher", "disc/acc_student"))
    assert same(student_before, params(trainer.student)), "a discriminator update changed the student"
    assert same(adapter_before, adapter), "a discriminator update changed the student-side adapter"
    assert not same(own_before, own), "the discriminator update did not train the discriminator"

    own_before = [p.detach().clone() for p in own]
    out = trainer.update(trainer.player("student"))
    assert set(out) == {"loss/student/gan", "loss/student/total"}
    assert same(own_before, own), "a student update changed the discriminator"
    assert not same(student_before, params(trainer.student)), "the adversarial term did not reach the student"
    if adapter:
        assert not same(adapter_before, adapter), "the feature adapter did not train with the student"


@pytest.mark.parametrize("kind", KINDS)
def test_r1_and_spectral_norm_keep_the_game_finite(digits_teacher, kind):
    trainer = gankd_trainer(digits_teacher, kind, **{"discriminator.spectral_norm": True,
                                                      "method.terms": {"discriminator": {"r1": 1.0}}})
    own, adapter = split_discriminator(trainer)
    layers = [m for m in trainer.discriminator.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.Embedding))]
    adapter_ids = {id(p) for p in adapter}
    normalised = [m for m in layers if not any(id(p) in adapter_ids for p in m.parameters())]
    assert normalised and all(nn.utils.parametrize.is_parametrized(m, "weight") for m in normalised)
    assert not any(nn.utils.parametrize.is_parametrized(m) for m in trainer.discriminator.student_side_modules())
    r1 = []
    for _ in range(5):
        out = trainer.update(trainer.player("discriminator"))
        state = {k: v.clone() for k, v in trainer.discriminator.state_dict().items() if "adapter" not in k}
        out.update(trainer.update(trainer.player("student")))
        assert all(math.isfinite(float(v)) for v in out.values()), out
        r1.append(float(out["loss/discriminator/r1"]))
        # not even the power iteration's vectors move in a student update
        assert all(torch.equal(v, trainer.discriminator.state_dict()[k]) for k, v in state.items())
    assert all(v > 0 for v in r1)
    # after a few power iterations every layer's weight matrix has spectral norm ≈ 1
    # (never below: the iteration estimates σ from below)
    for m in normalised:
        sigma = torch.linalg.matrix_norm(m.weight.detach().flatten(1), ord=2)
        assert 0.99 <= float(sigma) <= 1.3, (m, float(sigma))


@pytest.mark.parametrize("loss", sorted(GAN_LOSSES.names()))
@pytest.mark.parametrize("method", ["gankd", "gankd_datafree"])
def test_gankd_methods_train_and_log_discriminator_accuracy(digits_teacher, tmp_path, method, loss):
    steps = 3
    trainer = gankd_trainer(digits_teacher, "logit", method, **{"discriminator.loss": loss, "trainer.steps": steps,
                                                                  "trainer.log_every": 1})
    monitor = Monitor(tmp_path, steps, "", console=False)
    try:
        metrics = trainer.fit(monitor)
    finally:
        monitor.close()
    assert 0 <= metrics["student_accuracy"] <= 100
    scalars = EventAccumulator(str(tmp_path)).Reload()
    tags = set(scalars.Tags()["scalars"])
    assert {"loss/discriminator/gan", "loss/student/gan", "disc/acc_teacher", "disc/acc_student"} <= tags
    for tag in ("disc/acc_teacher", "disc/acc_student"):
        events = scalars.Scalars(tag)
        assert [e.step for e in events] == list(range(1, steps + 1))
        assert all(0 <= e.value <= 1 for e in events)
    assert all(math.isfinite(e.value) for tag in tags if tag.startswith("loss/") for e in scalars.Scalars(tag))
