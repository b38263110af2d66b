"""Mixed precision on the CPU: bf16 autocast, and fp16 autocast with one GradScaler per optimizer.

Tolerance. Each rounding to a format with unit roundoff u (bf16: 2⁻⁸ ≈ 3.9e-3, fp16: 2⁻¹¹ ≈ 4.9e-4)
changes a value by at most a factor 1 ± u; autocast rounds weights and activations at each layer
and accumulates in fp32, so after the few layers of these nets logits carry errors of a few u.
A loss term must therefore agree with fp32 within 8u of its size, plus 8u absolute for terms
near zero (a CE of a confident teacher is a small difference of large logits, so its error
scales with the logits, not with the term). Measured worst cases here: bf16 2.2e-2 relative
(`oh`, value 0.16), fp16 1.8e-3: inside the bound, while a term summed in half precision,
a lost temperature or a wrong sign would be far outside it.
"""
from __future__ import annotations

import math

import pytest
import torch
from conftest import FAST
from torch import nn

from datafree import checkpoint
from datafree.cli import main
from datafree.config import load
from datafree.data import load_dataset
from datafree.models import create_model
from datafree.monitor import Monitor
from datafree.trainer import Trainer

UNIT_ROUNDOFF = {"bf16": 2.0 ** -8, "fp16": 2.0 ** -11}


def cpu_fp16_autocast_works() -> bool:
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            nn.Conv2d(2, 2, 3)(torch.randn(2, 2, 4, 4)).float().sum().backward()
        torch.amp.GradScaler("cpu")
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def precisions() -> list:
    fp16 = pytest.param("fp16", marks=pytest.mark.skipif(
        not cpu_fp16_autocast_works(),
        reason="this torch build has no fp16 CPU kernels for autocast / GradScaler('cpu')"))
    return ["bf16", fp16]


def make_trainer(teacher_path, method: str, precision: str, **overrides) -> Trainer:
    cfg = load(overrides={**FAST, "method.name": method, "trainer.precision": precision, "trainer.device": "cpu",
                          "student.args": {"width": 4}, **overrides})
    torch.manual_seed(0)  # the same student, generator and discriminator in every precision
    student = create_model("digits_cnn_half", 10, (1, 8, 8), width=4)
    return Trainer(cfg, load_dataset("digits"), student, checkpoint.load_model(teacher_path).model, None)


def losses_of_one_update(teacher_path, method: str, player: str, precision: str) -> dict[str, float]:
    """The loss terms of the first update of `player`: identical weights and batch in every precision."""
    trainer = make_trainer(teacher_path, method, precision)
    torch.manual_seed(1)  # the same noise (or augmentation of the same real batch)
    return {k: float(v) for k, v in trainer.update(trainer.player(player)).items() if k.startswith("loss/")}


@pytest.mark.parametrize("precision", precisions())
@pytest.mark.parametrize("method, player", [("dfq", "generator"), ("dfq", "student"), ("deepinv", "generator"),
                                            ("zskt", "student"), ("gankd", "discriminator"), ("gankd", "student")])
def test_losses_of_a_fixed_batch_match_fp32(digits_teacher, method, player, precision):
    reference = losses_of_one_update(digits_teacher, method, player, "fp32")
    mixed = losses_of_one_update(digits_teacher, method, player, precision)
    assert mixed.keys() == reference.keys()
    tolerance = 8 * UNIT_ROUNDOFF[precision]
    for name, value in reference.items():
        assert abs(mixed[name] - value) <= tolerance * (1 + abs(value)), (
            f"{name}: {precision} {mixed[name]} vs fp32 {value}")
    assert any(mixed[k] != reference[k] for k in reference), f"{precision} changed nothing: autocast not in effect"


class Recorder(Monitor):
    def __init__(self) -> None:
        super().__init__(None, 0, "", console=False)
        self.rows: list[dict[str, float]] = []

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self.rows.append(dict(values))


@pytest.mark.parametrize("precision", precisions())
@pytest.mark.parametrize("method", ["ours", "gankd"])
def test_training_steps_keep_losses_finite(digits_teacher, method, precision):
    trainer = make_trainer(digits_teacher, method, precision, **{"trainer.steps": 4, "trainer.log_every": 1})
    before = [p.detach().clone() for p in trainer.student.parameters()]
    recorder = Recorder()
    metrics = trainer.fit(recorder)
    losses = [v for row in recorder.rows for k, v in row.items() if k.startswith("loss/")]
    assert len(losses) >= 4 and all(math.isfinite(v) for v in losses)
    assert all(torch.isfinite(p).all() for p in trainer.student.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.student.parameters()))
    assert 0 <= metrics["student_accuracy"] <= 100


@pytest.mark.parametrize("precision", ["fp32", "bf16", *precisions()[1:]])
def test_one_grad_scaler_per_optimizer_only_for_fp16(digits_teacher, precision):
    trainer = make_trainer(digits_teacher, "gankd_datafree", precision)
    assert {p.name for p in trainer.players} == {"generator", "discriminator", "student"}
    assert len({id(p.scaler) for p in trainer.players}) == 3
    assert all(p.scaler.is_enabled() == (precision == "fp16") for p in trainer.players)


@pytest.mark.parametrize("precision", precisions()[1:])
def test_an_fp16_overflow_skips_only_that_players_step(digits_teacher, precision):
    """Each player's loss has its own scale (the generator's bn term is ~15, the student's KL ~1):
    an overflow in one player's backward halves its scale and skips its step, nobody else's."""
    trainer = make_trainer(digits_teacher, "dfq", precision)
    # scales are set up on first use
    trainer.update(trainer.player("generator")), trainer.update(trainer.player("student"))
    generator_scaler, student_scaler = trainer.player("generator").scaler, trainer.player("student").scaler
    generator_scaler.update(new_scale=1e30)  # the scaled generator loss cannot pass fp16 activations
    student_scale = student_scaler.get_scale()
    generator_before = [p.detach().clone() for p in trainer.generator.parameters()]
    trainer.update(trainer.player("generator"))
    assert all(torch.equal(a, b) for a, b in zip(generator_before, trainer.generator.parameters()))
    assert generator_scaler.get_scale() == pytest.approx(0.5e30)
    student_before = [p.detach().clone() for p in trainer.student.parameters()]
    trainer.update(trainer.player("student"))
    assert student_scaler.get_scale() == student_scale
    assert any(not torch.equal(a, b) for a, b in zip(student_before, trainer.student.parameters()))
    # each scale travels with the run checkpoint
    restored = make_trainer(digits_teacher, "dfq", precision)
    restored.load_state_dict(trainer.state_dict())
    assert restored.player("generator").scaler.get_scale() == generator_scaler.get_scale()
    assert restored.player("student").scaler.get_scale() == student_scale


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_without_bf16_instructions_is_said(digits_teacher, monkeypatch, capsys, tmp_path, native):
    """Emulated bf16 is several times slower than fp32 (datafree/build.py): the run says so once."""
    monkeypatch.setattr("datafree.build.cpu_has_bf16", lambda: native)
    assert main(["distill", "--teacher", str(digits_teacher), "--method", "dfad", "--steps", "2", "--device", "cpu",
                 "--set", "trainer.precision=bf16", "--set", "student.args.width=4", "--set", "trainer.eval_every=0",
                 "--run-dir", str(tmp_path / "run")]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if "no bf16 instructions" in line]
    assert len(warned) == (0 if native else 1)
