"""The divergence guard: a NaN or Inf loss term (or NaN weights) stops the run with a message that
names the step and the term, and the last good checkpoint on disk stays intact and loadable.

A test-only loss term, added to the registry for one test, turns bad at a known step. It adds
0·(student logits) otherwise, so until then the run trains exactly like the plain method.
"""
from __future__ import annotations

import itertools

import pytest
import torch
from conftest import FAST

import datafree
from datafree import checkpoint, cli
from datafree.errors import DivergenceError
from datafree.methods.terms import TERMS, Term

TINY = {**FAST, "student.args": {"width": 4}, "trainer.batch_size": 32, "trainer.checkpoint_every": 5,
        "trainer.keep_checkpoints": 5}


def register_poison(monkeypatch, player: str, at_call: int, bad: str) -> None:
    """Term 'poison' for `player`: zero, except at its `at_call`-th evaluation, where it is
    bad = "nan" / "inf" (the loss itself), or "nan_grad" (a finite 0 whose gradient is NaN)."""
    calls = itertools.count(1)

    def poison(b) -> torch.Tensor:
        logits = b.student.logits
        zero = 0.0 * logits.sum()
        if next(calls) != at_call:
            return zero
        if bad == "nan_grad":  # sqrt at 0: value 0, gradient inf·0 = NaN
            return ((logits - logits.detach()) ** 2).sum().sqrt()
        return zero + float(bad)

    monkeypatch.setitem(TERMS._entries, "poison", Term(poison, (player,), frozenset(), "test only"))


def assert_last_good_checkpoint(run_dir, step: int) -> None:
    """The newest checkpoint is the one of `step`: whole (its digest checks), finite, and resumable state."""
    found = checkpoint.list_run_checkpoints(run_dir)
    assert found and found[-1].name == f"step_{step:08d}.pt"
    state = checkpoint.load_latest_run(run_dir)
    assert state["step"] == step
    for name, net in state["models"].items():
        for key, value in net.items():
            assert not value.is_floating_point() or torch.isfinite(value).all(), (name, key)
    assert not (run_dir / "student.pt").exists() and not (run_dir / "metrics.json").exists()


@pytest.mark.parametrize("method, player, bad", [("kd", "student", "nan"), ("ours", "generator", "inf")])
def test_a_nan_or_inf_term_stops_the_run_naming_step_and_term(digits_teacher, tmp_path, monkeypatch,
                                                              method, player, bad):
    # kd updates the student once per step and ours the generator once per step: call 8 is step 8.
    register_poison(monkeypatch, player, at_call=8, bad=bad)
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError) as caught:
        datafree.distill(digits_teacher, "digits_cnn_half", method, steps=12, run_dir=run_dir, quiet=True,
                         overrides={**TINY, f"method.terms.{player}.poison": 1.0})
    message = str(caught.value)
    value = "nan" if bad == "nan" else "inf"
    assert message.startswith(f"step 8: loss term 'poison' of the {player} is {value}; the run stopped")
    assert f"its last good checkpoint is {run_dir / 'checkpoints' / 'step_00000005.pt'}" in message
    assert "lower the learning rate" in message
    assert_last_good_checkpoint(run_dir, 5)


def test_nan_weights_from_a_finite_loss_are_never_saved(digits_teacher, tmp_path, monkeypatch):
    """A finite loss with a NaN gradient poisons the weights during step 10; the checkpoint of
    step 10 is refused, and step 5's stays the last one."""
    register_poison(monkeypatch, "student", at_call=10, bad="nan_grad")
    run_dir = tmp_path / "run"
    with pytest.raises(DivergenceError, match=r"^step 10: the student's \S+ holds NaN/Inf values; the run stopped "
                                              r"without saving them; its last good checkpoint is \S+step_00000005\.pt"):
        datafree.distill(digits_teacher, "digits_cnn_half", "kd", steps=12, run_dir=run_dir, quiet=True,
                         overrides={**TINY, "method.terms.student.poison": 1.0})
    assert_last_good_checkpoint(run_dir, 5)


def test_the_cli_reports_divergence_in_one_line_with_exit_status_2(digits_teacher, tmp_path, monkeypatch, capsys):
    register_poison(monkeypatch, "student", at_call=3, bad="nan")
    run_dir = tmp_path / "run"
    code = cli.main(["distill", "--teacher", str(digits_teacher), "--method", "kd", "--steps", "12", "--quiet",
                     "--run-dir", str(run_dir), "--set", "method.terms.student.poison=1",
                     "--set", "student.args.width=4", "--set", "trainer.batch_size=32",
                     "--set", "trainer.checkpoint_every=2", "--set", "trainer.eval_every=0"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("datafree: error: step 3: loss term 'poison' of the student is nan; the run stopped; "
                          f"its last good checkpoint is {run_dir / 'checkpoints' / 'step_00000002.pt'}")
    assert_last_good_checkpoint(run_dir, 2)


def test_before_any_checkpoint_the_message_says_none_was_saved(digits_teacher, tmp_path, monkeypatch):
    register_poison(monkeypatch, "student", at_call=2, bad="-inf")
    with pytest.raises(DivergenceError, match=r"^step 2: loss term 'poison' of the student is -inf; the run stopped; "
                                              r"no checkpoint had been saved yet"):
        datafree.distill(digits_teacher, "digits_cnn_half", "kd", steps=12, run_dir=tmp_path / "run", quiet=True,
                         overrides={**TINY, "method.terms.student.poison": 1.0})
    assert checkpoint.list_run_checkpoints(tmp_path / "run") == []
