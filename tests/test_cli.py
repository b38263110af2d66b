"""The command line end to end: train a teacher, distill it with and without data, evaluate."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import datafree
from datafree import checkpoint
from datafree.cli import main
from datafree.config import load as load_config
from datafree.errors import ConfigError

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
        assert ((metrics["real_samples"] > 0) == (method == "kd")
                and (metrics["synthetic_samples"] > 0) == (method == "dfad"))

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


@pytest.mark.slow
def test_the_console_script_and_python_m_work():
    for command in (["datafree", "list", "methods"], [sys.executable, "-m", "datafree", "list", "methods"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "ours" in done.stdout, done.stderr


# ---------------------------------------------------------------------------------------------
# The Python API with config=: arguments left out take the config's values, not built-in defaults

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"


@pytest.fixture()
def configs_built(monkeypatch):
    """api.run replaced by one that returns the config it was given: nothing is trained."""
    from datafree import api

    monkeypatch.setattr(api, "run", lambda command, cfg, **kwargs: cfg)


@pytest.mark.parametrize("as_object", [False, True])
def test_api_config_is_not_overridden_by_default_arguments(configs_built, as_object):
    teacher_toml, dfad_toml = CONFIGS / "cifar10" / "teacher_resnet34.toml", CONFIGS / "digits" / "dfad.toml"
    cfg = datafree.train_teacher(config=load_config(teacher_toml) if as_object else teacher_toml)
    assert (cfg.teacher.name, cfg.data.name, cfg.method.name) == ("resnet34", "cifar10", "scratch")
    cfg = datafree.distill("teacher.pt", config=load_config(dfad_toml) if as_object else str(dfad_toml))
    assert (cfg.method.name, cfg.student.name, cfg.trainer.s_steps) == ("dfad", "digits_cnn_half", 5)
    assert cfg.teacher.checkpoint == "teacher.pt"
    # Without a config the documented defaults still apply.
    cfg = datafree.train_teacher()
    assert (cfg.teacher.name, cfg.data.name) == ("digits_cnn", "digits")
    cfg = datafree.distill("teacher.pt", data="digits")
    assert (cfg.student.name, cfg.method.name, cfg.method.temperature) == ("digits_cnn_half", "ours", 20.0)


def test_api_another_method_than_the_configs(configs_built):
    dfad_toml = CONFIGS / "digits" / "dfad.toml"
    # From the file: rebuilt with the new method's recipe (kd: one student update per step, T = 4).
    cfg = datafree.distill("teacher.pt", method="kd", config=dfad_toml)
    assert (cfg.method.name, cfg.trainer.s_steps, cfg.method.temperature) == ("kd", 1, 4.0)
    # A Config holds dfad's recipe values already: refused rather than mixed into a kd run.
    with pytest.raises(ConfigError, match="runs method 'dfad', not 'kd'"):
        datafree.distill("teacher.pt", method="kd", config=load_config(dfad_toml))
    assert datafree.distill("teacher.pt", method="dfad", config=load_config(dfad_toml)).method.name == "dfad"


# ---------------------------------------------------------------------------------------------
# Plain `datafree` / `datafree demo`


def test_plain_datafree_keeps_its_flags(monkeypatch):
    def bad_demo(run_root=None, quiet=False):
        raise ConfigError("a bad demo")

    monkeypatch.setattr("datafree.demo.run_demo", bad_demo)
    monkeypatch.setattr(sys, "argv", ["datafree", "--debug"])
    with pytest.raises(ConfigError, match="a bad demo"):  # --debug kept: the traceback, not one line
        main()


def test_stopping_the_demo_says_how_to_go_on(tmp_path, monkeypatch, capsys):
    from datafree.errors import Interrupted

    run = tmp_path / "demo" / "teacher"
    path = checkpoint.save_run({"step": 7, "notes": {"command": "train-teacher"}}, run, 7, keep=1)

    def stopped_demo(run_root=None, quiet=False):
        raise Interrupted(7, path)

    monkeypatch.setattr("datafree.demo.run_demo", stopped_demo)
    assert main(["demo"]) == 130
    err = capsys.readouterr().err
    assert "demo --resume" not in err  # the demo has no --resume
    assert f"datafree train-teacher --resume {run}" in err and "run it again (datafree demo)" in err
