"""The command line end to end: train a teacher, distill it with and without data, evaluate."""
import json
import subprocess
import sys

import pytest
import torch

from datafree import checkpoint
from datafree.cli import main

TINY = ["--steps", "20", "--quiet", "--set", "trainer.batch_size=32", "--set", "trainer.eval_every=10"]


def test_train_teacher_then_distill_then_evaluate(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train-teacher", "--model", "digits_cnn", "--out", "teacher.pt", "--run-dir", "t",
                 "--set", "teacher.args.width=8", *TINY]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train-teacher: test accuracy ") and "saved teacher.pt" in out
    teacher = checkpoint.load_model("teacher.pt")
    assert teacher.arch == {"name": "digits_cnn", "args": {"width": 8}} and teacher.info.name == "digits"

    for method in ("kd", "dfad"):
        assert main(["distill", "--teacher", "teacher.pt", "--method", method, "--run-dir", method,
                     "--set", "student.args.width=4", *TINY]) == 0
        out = capsys.readouterr().out
        assert "distill: test accuracy" in out and "(teacher " in out and "agreement" in out
        run = tmp_path / method
        assert {"config.toml", "metrics.json", "student.pt", "checkpoints"} <= {p.name for p in run.iterdir()}
        assert any(p.name.startswith("events.out.tfevents") for p in run.iterdir())
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["teacher_accuracy"] == pytest.approx(teacher.metrics["test_accuracy"])
        assert metrics["student_steps"] == 20 * (5 if method == "dfad" else 1)
        assert (metrics["real_samples"] > 0) == (method == "kd") and (metrics["synthetic_samples"] > 0) == (method == "dfad")

    assert main(["evaluate", "dfad/student.pt"]) == 0
    out = capsys.readouterr().out
    assert f"{json.loads((tmp_path / 'dfad/metrics.json').read_text())['student_accuracy']:.2f}%" in out

    # The saved config reproduces the run: same student weights from a fresh start.
    assert main(["distill", "--config", "dfad/config.toml", "--run-dir", "again", "--quiet"]) == 0
    a, b = (checkpoint.load_model(tmp_path / d / "student.pt").model.state_dict() for d in ("dfad", "again"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_list_names_everything(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("digits", "cifar10", "digits_cnn", "resnet34", "torchvision.<name>", "ours", "dfad", "gankd",
                 "adv_dkl", "bn", "dcgan", "feature", "hinge"):
        assert name in out


def test_plain_datafree_runs_the_demo(monkeypatch):
    called = {}
    monkeypatch.setattr("datafree.demo.run_demo", lambda run_root=None, quiet=False: called.setdefault("demo", True))
    assert main([]) == 0 and called == {"demo": True}


def test_the_console_script_and_python_m_work():
    for command in (["datafree", "list", "methods"], [sys.executable, "-m", "datafree", "list", "methods"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "ours" in done.stdout, done.stderr
