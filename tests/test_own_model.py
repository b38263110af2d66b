"""Distilling your own model: no registered data set, no training data, from Python and the CLI."""
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import datafree
from datafree import checkpoint
from datafree.cli import main
from datafree.config import load

QUIET = {"trainer.eval_every": 0, "trainer.log_every": 5, "trainer.image_every": 0}


def tabular(seed: int = 0, n: int = 1200, features: int = 20, classes: int = 5):
    """A standardised tabular task and a plain-PyTorch BatchNorm MLP teacher trained on it."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n, n_features=features, n_informative=10, n_classes=classes, random_state=seed)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y)
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(features, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, classes))
    opt = torch.optim.Adam(teacher.parameters(), 1e-2)
    for _ in range(150):
        idx = torch.randint(0, n - 200, (128,))
        loss = nn.functional.cross_entropy(teacher(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return teacher.eval(), x[n - 200:], y[n - 200:]


def mlp_student(features: int = 20, classes: int = 5) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Linear(16, classes))


@pytest.fixture(scope="module")
def task():
    return tabular()


def test_a_plain_pytorch_teacher_distils_with_labelled_test_data(task, tmp_path, capsys):
    teacher, x, y = task
    result = datafree.distill(teacher, mlp_student(), input_shape=(20,), test_data=(x, y), steps=60,
                              run_dir=tmp_path / "run", overrides=QUIET)
    m = result.metrics
    teacher_acc = 100 * float((teacher(x).argmax(1) == y).float().mean())
    assert m["teacher_accuracy"] == pytest.approx(teacher_acc)
    assert m["student_accuracy"] > 40 and m["test_samples"] == 200  # chance is 20%
    assert "heldout_agreement" not in m  # labelled test data: accuracy is the figure
    # The automatic choice for feature vectors is said once, on one line.
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("datafree: method 'ours'")]
    assert len(notes) == 1 and "generator 'mlp'" in notes[0] and "dropped generator.augment ['shift']" in notes[0]
    # Provenance: what the networks really were, never a registered name they did not use.
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["student"] == {"kind": "module", "source": "Sequential", "class": "Sequential", "parameters": 421}
    assert record["inputs"]["input_shape"] == [20] and record["inputs"]["num_classes"] == 5
    config = (tmp_path / "run" / "config.toml").read_text()
    assert 'source = "module Sequential (421 parameters)"' in config and "digits_cnn" not in config


def test_no_test_data_is_a_normal_run_reporting_held_out_agreement(task, tmp_path):
    teacher, _, _ = task
    result = datafree.distill(teacher, mlp_student(), input_shape=(20,), steps=30, run_dir=tmp_path / "run",
                              overrides={**QUIET, "trainer.eval_every": 10})  # logs after evaluations too
    m = result.metrics
    assert len(result.evaluations) == 3 and all("heldout_agreement" in e for e in result.evaluations)
    assert "student_accuracy" not in m and m["heldout_samples"] == 1024
    assert 0 <= m["heldout_agreement"] <= 100 and m["heldout_kl"] >= 0
    assert (tmp_path / "run" / "student.pt").is_file()
    assert checkpoint.load_model(tmp_path / "run" / "student.pt", mlp_student()).info.input_shape == (20,)


def test_unlabelled_test_inputs_report_agreement_and_kl(task, tmp_path):
    teacher, x, _ = task
    m = datafree.distill(teacher, mlp_student(), input_shape=(20,), test_data=(x,), steps=20,
                         run_dir=tmp_path / "run", overrides=QUIET).metrics
    assert "student_accuracy" not in m and m["test_samples"] == 200 and "agreement" in m and m["test_kl"] >= 0
    assert "heldout_agreement" in m  # no labels: held-out synthetic figures too


@pytest.mark.parametrize("form", ["numpy", "dataset", "loader", "npz"])
def test_test_data_forms(task, tmp_path, form):
    teacher, x, y = task
    if form == "numpy":
        data = (x.numpy(), y.numpy())
    elif form == "dataset":
        data = torch.utils.data.TensorDataset(x, y)
    elif form == "loader":
        data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    else:
        data = tmp_path / "test.npz"
        np.savez(data, x=x.numpy(), y=y.numpy())
    m = datafree.distill(teacher, mlp_student(), input_shape=(20,), test_data=data, steps=2,
                         run_dir=tmp_path / "run", overrides=QUIET).metrics
    assert m["test_samples"] == 200 and "student_accuracy" in m


@pytest.mark.parametrize("data, message", [
    ((torch.zeros(0, 20),), "the test data is empty"),
    ((torch.zeros(10, 8),), "test inputs have shape (8,) but the model takes (20,)"),
    ((torch.zeros(10, 20), torch.full((10,), 7)), "test labels run from 7 to 7 but the teacher has 5 classes"),
    ((torch.zeros(10, 20), torch.zeros(9)), "test labels must be one class index per input"),
])
def test_bad_test_data_is_refused_before_training(task, tmp_path, data, message):
    teacher, _, _ = task
    with pytest.raises(datafree.ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        datafree.distill(teacher, mlp_student(), input_shape=(20,), test_data=data, steps=2, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_module_teacher_without_an_input_shape_is_told_what_to_give(task, tmp_path):
    teacher, _, _ = task
    with pytest.raises(datafree.ConfigError, match=r"does not record what inputs it takes; give their shape"):
        datafree.distill(teacher, mlp_student(), steps=2, run_dir=tmp_path / "run")
    with pytest.raises(datafree.ConfigError, match=r"does not take inputs of shape \(8,\)"):
        datafree.distill(teacher, mlp_student(), input_shape=(8,), steps=2, run_dir=tmp_path / "run")
    with pytest.raises(datafree.ConfigError, match=r"'data.num_classes' is 3 but the teacher predicts 5"):
        datafree.distill(teacher, mlp_student(), input_shape=(20,), num_classes=3, steps=2, run_dir=tmp_path / "run")
    with pytest.raises(datafree.ConfigError, match=r"method 'kd' trains on real labelled data"):
        datafree.distill(teacher, mlp_student(), "kd", input_shape=(20,), steps=2, run_dir=tmp_path / "run")


class LogitsAndFeatures(nn.Module):
    """A model whose forward returns (logits, features), as many do."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net(x), x


def test_a_teacher_or_student_returning_a_tuple_is_told_to_return_logits_alone(task, tmp_path):
    teacher, _, _ = task
    for pair in ((LogitsAndFeatures(teacher), mlp_student()), (teacher, LogitsAndFeatures(mlp_student()))):
        with pytest.raises(datafree.ConfigError, match=r"^a LogitsAndFeatures returns a tuple, not a tensor of class"):
            datafree.distill(*pair, input_shape=(20,), steps=2, run_dir=tmp_path / "run")


def test_an_input_spec_carries_mean_and_std(tmp_path):
    spec = datafree.InputSpec((1, 8, 8), mean=(0.3,), std=(0.37,))
    x = torch.rand(4, 1, 8, 8)
    assert torch.allclose(spec.denormalize(spec.normalize(x)), x, atol=1e-6)
    assert datafree.InputSpec((20,)).normalize(x) is x  # no normalisation: inputs as they are
    with pytest.raises(datafree.ConfigError, match="give both mean and std"):
        datafree.InputSpec((20,), mean=(0.0,))
    with pytest.raises(datafree.ConfigError, match="mean and std need 1 or 3 values"):
        datafree.InputSpec((3, 8, 8), mean=(0.0, 0.0), std=(1.0, 1.0))


def test_explicit_image_settings_on_vectors_stay_errors(task, tmp_path):
    teacher, _, _ = task
    with pytest.raises(datafree.ConfigError, match=r"'generator.augment' = \['shift'\] needs images"):
        datafree.distill(teacher, mlp_student(), input_shape=(20,), steps=2, run_dir=tmp_path / "a",
                         overrides={"generator.augment": ["shift"]})
    with pytest.raises(datafree.ConfigError, match=r"'method.terms.generator.tv': loss term 'tv' cannot work here"):
        datafree.distill(teacher, mlp_student(), "deepinv", input_shape=(20,), steps=2, run_dir=tmp_path / "b",
                         overrides={"method.terms.generator.tv": 0.1})


class Interrupting(nn.Module):
    """A student that receives Ctrl-C in its first training forward pass."""

    def __init__(self):
        super().__init__()
        self.net, self.interrupted = mlp_student(), False

    def forward(self, x):
        if self.training and torch.is_grad_enabled() and not self.interrupted:  # not a look while building
            self.interrupted = True
            os.kill(os.getpid(), signal.SIGINT)
        return self.net(x)


def test_sigint_inside_distill_raises_the_public_interrupted_error(task, tmp_path):
    teacher, _, _ = task
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if pytest was
    try:                                                                 # started in a script's background
        with pytest.raises(datafree.Interrupted) as caught:
            datafree.distill(teacher, Interrupting(), input_shape=(20,), steps=50, run_dir=tmp_path / "run",
                             overrides=QUIET)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert isinstance(caught.value, datafree.DatafreeError) and "Interrupted" in datafree.__all__
    assert caught.value.step == 1 and caught.value.run_dir == tmp_path / "run"
    assert f"datafree.resume({str(tmp_path / 'run')!r})" in str(caught.value)


def test_a_run_whose_process_ignores_sigint_keeps_ignoring_it(task, tmp_path):
    """A job a shell script starts in the background ignores SIGINT (Ctrl-C is for the script); so does its run."""
    teacher, _, _ = task
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = datafree.distill(teacher, Interrupting(), input_shape=(20,), steps=3, run_dir=tmp_path / "run",
                                  overrides=QUIET)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.model.interrupted and result.evaluations[-1]["step"] == 3


# --- the command line: TorchScript and factory teachers, a 3x32x32 CNN, resume in a fresh process ----


NETS = '''
import torch
from torch import nn

def tabular_teacher(num_classes, input_shape):
    return nn.Sequential(nn.Linear(input_shape[0], 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, num_classes))

def small_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(4),
                         nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(16, 7))
'''


@pytest.fixture
def workdir(tmp_path, monkeypatch, task):
    """A folder holding the user's files: a module of model factories, the tabular teacher as
    TorchScript and as weights, and a test .npz."""
    teacher, x, y = task
    (tmp_path / "mynets.py").write_text(NETS)
    torch.jit.save(torch.jit.script(teacher), tmp_path / "teacher.ts")
    torch.save(teacher.state_dict(), tmp_path / "weights.pt")
    np.savez(tmp_path / "test.npz", x=x.numpy(), y=y.numpy())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("teacher", [["--teacher", "teacher.ts"],
                                     ["--teacher", "weights.pt", "--teacher-factory", "mynets:tabular_teacher",
                                      "--num-classes", "5"]])
def test_cli_distils_a_torchscript_or_factory_teacher(workdir, capsys, teacher):
    args = ["distill", *teacher, "--input-shape", "20", "--student", "mlp", "--test-data", "test.npz",
            "--steps", "20", "--run-dir", "run", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("distill: test accuracy ") and "(teacher " in out
    record = json.loads((workdir / "run" / "metrics.json").read_text())
    kind = "torchscript" if "teacher.ts" in teacher else "factory"
    assert record["teacher"]["kind"] == kind and record["teacher"]["parameters"] == 1797
    assert main(["evaluate", "run/student.pt", "--test-data", "test.npz"]) == 0
    assert f"{record['student_accuracy']:.2f}% on 200 samples" in capsys.readouterr().out


def test_cli_takes_the_inputs_of_a_checkpoint_that_records_your_own(workdir, capsys, digits_teacher):
    """A datafree checkpoint of your own inputs (a student distilled before) needs no --input-shape beside
    --test-data; one of a registered data set refuses --test-data naming that data set, not the default."""
    first = ["distill", "--teacher", "teacher.ts", "--input-shape", "20", "--student", "mlp", "--steps", "2",
             "--run-dir", "first", "--quiet"]
    assert main(first) == 0
    capsys.readouterr()
    again = ["distill", "--teacher", "first/student.pt", "--student", "mlp", "--test-data", "test.npz", "--steps", "2",
             "--run-dir", "again", "--quiet"]
    assert main(again) == 0
    assert capsys.readouterr().out.startswith("distill: test accuracy ")
    assert json.loads((workdir / "again" / "metrics.json").read_text())["test_samples"] == 200

    registered = ["distill", "--teacher", str(digits_teacher), "--test-data", "test.npz", "--steps", "2",
                  "--run-dir", "registered", "--quiet"]
    assert main(registered) == 2
    err = capsys.readouterr().err
    assert "trained on the registered data set 'digits'" in err and "drop data.test_data" in err
    assert not (workdir / "registered").exists()


def test_cli_refuses_a_bare_state_dict_without_its_factory(workdir, capsys):
    assert main(["distill", "--teacher", "weights.pt", "--input-shape", "20", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds weights without their architecture" in err and "--teacher-factory package.module:function" in err


@pytest.mark.slow
def test_a_cnn_teacher_no_data_set_fits_distils_from_the_cli_and_resumes_in_a_fresh_process(workdir):
    """A 3x32x32 CNN with 7 classes (no registered data set has that), a test .npz, and a run that
    is resumed by a new process from its middle checkpoint to the same weights."""
    torch.manual_seed(0)
    sys.path.insert(0, str(workdir))
    import mynets  # noqa: E402  (the module the fixture wrote)

    torch.save(mynets.small_cnn().state_dict(), workdir / "cnn.pt")
    x = torch.rand(40, 3, 32, 32)
    np.savez(workdir / "images.npz", x=x.numpy(), y=np.arange(40) % 7)
    args = ["distill", "--teacher", "cnn.pt", "--teacher-factory", "mynets:small_cnn", "--input-shape", "3,32,32",
            "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--student", "digits_cnn_tiny", "--test-data",
            "images.npz", "--steps", "6", "--quiet", "--set", "trainer.checkpoint_every=3", "--set",
            "trainer.keep_checkpoints=5", "--set", "trainer.batch_size=16"]
    env = {**os.environ, "PYTHONPATH": str(workdir), "OMP_NUM_THREADS": "1"}
    run = lambda *extra: subprocess.run([sys.executable, "-m", "datafree", *args[:0], *extra], cwd=workdir, env=env,  # noqa: E731
                                        capture_output=True, text=True, timeout=300)
    done = run(*args, "--run-dir", "whole")
    assert done.returncode == 0, done.stderr
    whole = checkpoint.load_model(workdir / "whole/student.pt").model.state_dict()
    assert json.loads((workdir / "whole/metrics.json").read_text())["inputs"]["num_classes"] == 7

    done = run(*args, "--run-dir", "half")
    assert done.returncode == 0, done.stderr
    for name in ("student.pt", "metrics.json", "checkpoints/step_00000006.pt"):
        (workdir / "half" / name).unlink()  # as if killed after the checkpoint of step 3
    resumed = run("distill", "--resume", "half")
    assert resumed.returncode == 0, resumed.stderr
    half = checkpoint.load_model(workdir / "half/student.pt").model.state_dict()
    assert all(torch.equal(whole[k], half[k]) for k in whole)


def test_a_loaded_config_takes_your_own_inputs_and_automatic_choices(task, tmp_path):
    """A Config object keeps track of what was set on purpose: the recipe's image generator and
    augmentation give way to feature vectors, and input_shape replaces the default data set."""
    from datafree.config import load

    teacher, x, y = task
    result = datafree.distill(teacher, mlp_student(), config=load(overrides={"method.name": "ours"}),
                              input_shape=(20,), test_data=(x, y), steps=5, run_dir=tmp_path / "run", quiet=True,
                              overrides=QUIET)
    assert result.metrics["student_steps"] == 25


def test_evaluate_reads_a_registered_data_set_as_the_model_was_trained_on_it(tmp_path):
    result = datafree.train_teacher("digits_cnn_half", "digits", steps=3, run_dir=tmp_path / "run", quiet=True,
                                    overrides={**QUIET, "data.image_size": 16, "data.channels": 3})
    figures = datafree.evaluate(result.checkpoint)
    assert figures["samples"] == 450 and 0 <= figures["accuracy"] <= 100


def test_a_torchscript_image_teacher_distils_with_the_default_method(workdir):
    """A scripted CNN takes no forward hooks: the terms that read its layers are dropped (and said),
    the rest trains; before, looking for its stages raised a traceback."""
    import mynets  # noqa: E402  (the module the fixture wrote)

    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(mynets.small_cnn().eval()), workdir / "cnn.ts")
    assert main(["distill", "--teacher", "cnn.ts", "--input-shape", "3,32,32", "--student", "digits_cnn_tiny",
                 "--steps", "3", "--set", "trainer.batch_size=16", "--run-dir", "run", "--quiet"]) == 0
    record = json.loads((workdir / "run" / "metrics.json").read_text())
    assert "dropped loss term 'bn' of the generator (a TorchScript teacher's layers" in record["automatic_choices"]
    assert (workdir / "run" / "student.pt").exists()


def test_a_shape_other_than_the_checkpoints_is_refused_and_the_same_shape_keeps_its_normalisation(digits_teacher,
                                                                                                    tmp_path):
    with pytest.raises(datafree.ConfigError, match=r"'data.input_shape' is \(1, 16, 16\) but the teacher checkpoint "
                                                   r"records inputs of shape \(1, 8, 8\) \(digits\)"):
        datafree.distill(digits_teacher, "digits_cnn_half", input_shape=(1, 16, 16), steps=2, run_dir=tmp_path / "a")
    result = datafree.distill(digits_teacher, "digits_cnn_half", input_shape=(1, 8, 8), steps=2, overrides=QUIET,
                              run_dir=tmp_path / "b", quiet=True)
    recorded, used = checkpoint.load_model(digits_teacher).info, load(tmp_path / "b" / "config.toml").data
    assert result.metrics["heldout_samples"] > 0  # described by shape: no data set, no test split
    assert (tuple(used.mean), tuple(used.std)) == (recorded.mean, recorded.std) and recorded.mean is not None


@pytest.mark.parametrize("key, value, recorded", [("data.image_size", 30, 8), ("data.channels", 3, 1)])
def test_an_image_size_or_channel_count_other_than_the_checkpoints_is_refused_not_ignored(digits_teacher, tmp_path,
                                                                                          key, value, recorded):
    """Before, the teacher file's 1×8×8 replaced the given value without a word."""
    with pytest.raises(datafree.ConfigError, match=rf"'{key}' is {value} but the teacher checkpoint records inputs "
                                                   r"of shape \(1, 8, 8\) \(digits\)"):
        datafree.distill(digits_teacher, "digits_cnn_half", steps=2, overrides={key: value}, run_dir=tmp_path / "a")
    result = datafree.distill(digits_teacher, "digits_cnn_half", steps=2, overrides={**QUIET, key: recorded},
                              run_dir=tmp_path / "b", quiet=True)
    assert result.metrics["student_steps"] > 0
