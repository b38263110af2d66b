"""Bad input through the real command line: every case is one line on stderr that names the problem
and the fix (the closest name where one was mistyped), exit status 2, no traceback unless --debug,
and nothing on disk created, changed or removed.

Most cases call `datafree.cli.main` in-process (it returns the exit status); two run the real
`python -m datafree` to check the process's own exit status and the --debug traceback.
"""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from math import prod
from pathlib import Path

import pytest
import torch
from torch import nn

from datafree import checkpoint, cli
from datafree.errors import CheckpointError, ConfigError
from datafree.models import MODELS
from generators import GENERATORS, Generator

TINY = ["--quiet", "--steps", "3", "--set", "student.args.width=4", "--set", "trainer.batch_size=32",
        "--set", "trainer.eval_every=0"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch) -> Path:
    """An empty current folder: whatever a refused command leaves behind shows up here."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def refused(capsys, argv: list[str], *expected: str) -> str:
    """Run the CLI; it must exit 2 with exactly one line on stderr that contains each `expected`."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (code, out, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("datafree: error: "), err
    for text in expected:
        assert text in lines[0], f"{text!r} not in {lines[0]!r}"
    return lines[0]


def distill(teacher: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--run-dir", "run", *TINY, *extra]


# ---------------------------------------------------------------------------------------------
# Names, keys and numbers: caught while reading the config, before anything is built


@pytest.mark.parametrize("extra, expected", [
    (["--method", "ourz"], ["config key 'method.name': unknown method 'ourz'; did you mean 'ours'?"]),
    (["--student", "digits_cnn_hlf"], ["unknown model 'digits_cnn_hlf'; did you mean 'digits_cnn_half'?"]),
    (["--set", "generator.name=dcgn"], ["unknown generator 'dcgn'; did you mean 'dcgan'?"]),
    (["--method", "gankd", "--set", "discriminator.name=logt"],
     ["unknown discriminator 'logt'; did you mean 'logit'?"]),
    (["--set", "discriminator.loss=hinje"], ["unknown GAN loss 'hinje'; did you mean 'hinge'?"]),
    (["--data", "digts"], ["unknown data set 'digts'; did you mean 'digits'?"]),
    (["--set", "method.terms.student.kll=1"], ["unknown loss term 'kll'; did you mean 'kl'?"]),
    (["--set", "trainer.stepz=3"], ["unknown config key 'trainer.stepz'; did you mean 'trainer.steps'?"]),
    (["--set", "trainr.steps=3"], ["unknown config key 'trainr'; did you mean 'trainer'?"]),
    (["--set", "trainer.steps"], ["override 'trainer.steps' must look like section.key=value"]),
    (["--steps", "0"], ["config key 'trainer.steps' must be > 0 (got 0)"]),
    (["--set", "trainer.batch_size=-1"], ["config key 'trainer.batch_size' must be > 0 (got -1)"]),
    (["--set", "trainer.batch_size=2.5"], ["config key 'trainer.batch_size' must be an integer (got 2.5)"]),
    (["--set", "student.optim.lr=inf"], ["config key 'student.optim.lr' must be a finite number (got inf)"]),
    (["--set", "student.optim.lr=nan"], ["config key 'student.optim.lr' must be > 0 (got nan)"]),
    (["--set", "method.temperature=0"], ["config key 'method.temperature' must be > 0"]),
    (["--set", "generator.replay_fraction=2"],
     ["config key 'generator.replay_fraction' must be within [0, 1] (got 2.0)"]),
    (["--set", "trainer.keep_checkpoints=0"], ["config key 'trainer.keep_checkpoints' must be > 0"]),
    (["--seed", "-1"], ["config key 'trainer.seed' must be within [0, 4294967295] (got -1)"]),
    (["--set", "student.optim.betas=[0.9]"], ["config key 'student.optim.betas' must be two numbers in [0, 1)"]),
    (["--method", "kd", "--set", "trainer.batch_size=5000"],
     ["trainer.batch_size=5000 needs at least 5000 training samples; digits has", "lower trainer.batch_size"]),
    (["--set", "trainer.device=tpu"], ["config key 'trainer.device' must be auto, cpu, cuda or cuda:N (got 'tpu')"]),
    (["--set", "generator.args.width=0"], ["config key 'generator.args.width' must be a positive integer (got 0)"]),
    (["--set", "generator.args.width=-8"], ["config key 'generator.args.width' must be a positive integer (got -8)"]),
])
def test_bad_names_keys_and_numbers(digits_teacher, workdir, capsys, extra, expected):
    refused(capsys, distill(digits_teacher, *extra), *expected)
    assert snapshot(workdir) == {}


def test_unknown_teacher_model_name(workdir, capsys):
    refused(capsys, ["train-teacher", "--model", "digts_cnn", *TINY],
            "unknown model 'digts_cnn'; did you mean 'digits_cnn'?")
    assert snapshot(workdir) == {}


def test_unknown_key_in_a_config_file(digits_teacher, workdir, capsys):
    (workdir / "my.toml").write_text("[trainer]\nsteps = 3\nbatchsize = 32\n")
    before = snapshot(workdir)
    refused(capsys, ["distill", "--teacher", str(digits_teacher), "--config", "my.toml", "--quiet"],
            "unknown config key 'trainer.batchsize'; did you mean 'trainer.batch_size'?")
    refused(capsys, ["distill", "--teacher", str(digits_teacher), "--config", "missing.toml", "--quiet"],
            "config file not found: missing.toml")
    assert snapshot(workdir) == before


# ---------------------------------------------------------------------------------------------
# Data, teacher, student and generator that do not fit together


def test_data_root_missing(digits_teacher, workdir, capsys):
    refused(capsys, distill(digits_teacher, "--data", "cifar10", "--data-root", "/nonexistent"),
            "data root '/nonexistent' does not exist; pass --data-root to the folder holding cifar10, "
            "or add --download")
    refused(capsys, ["train-teacher", "--data", "cifar10", "--data-root", "/nonexistent", "--model", "resnet18", *TINY],
            "data root '/nonexistent' does not exist")
    assert snapshot(workdir) == {}


def test_teacher_for_another_data_set(digits_teacher, workdir, capsys):
    refused(capsys, distill(digits_teacher, "--data", "wine"),
            "was trained on digits (10 classes, inputs (1, 8, 8)) but data set wine has 3 classes",
            "pass --data digits")
    # the same data set converted otherwise: the fix is the teacher's conversion, not the name given already
    refused(capsys, distill(digits_teacher, "--data", "digits", "--set", "data.image_size=16"),
            "but data set digits has 10 classes, inputs (1, 16, 16); set data.channels = 1 and data.image_size = 8 "
            "as for the teacher (or name no data set: the teacher's is used)")
    assert snapshot(workdir) == {}


def test_student_with_another_number_of_classes(digits_teacher, workdir, capsys, monkeypatch):
    def five_logits(num_classes: int, input_shape: tuple[int, ...]) -> nn.Module:  # ignores num_classes
        return nn.Sequential(nn.Flatten(), nn.Linear(prod(input_shape), 5))

    monkeypatch.setitem(MODELS._entries, "test_five_logits", five_logits)
    refused(capsys, distill(digits_teacher, "--student", "test_five_logits", "--set", "student.args={}"),
            "model 'test_five_logits' returns outputs of shape (5,)", "expected 10 class logits")
    refused(capsys, distill(digits_teacher, "--set", "student.args.num_classes=5"),
            "config key 'student.args.num_classes' cannot be set: it comes from data set digits (10); remove it")
    assert snapshot(workdir) == {}


def test_teacher_and_student_modules_with_different_class_counts(tmp_path):
    """Through the API, where modules can be passed in (the CLI always builds both for the data)."""
    import datafree

    student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    wide_teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 12))
    with pytest.raises(ConfigError,
                       match=r"the teacher predicts 12 classes but the student 10; build the student for 12"):
        datafree.distill(wide_teacher, student, "kd", data="digits", steps=2, run_dir=tmp_path / "run", quiet=True)
    assert not (tmp_path / "run").exists()


class WrongShapeGenerator(Generator):
    """Makes 4×4 images for a teacher of 8×8 ones."""

    def __init__(self, info) -> None:
        super().__init__()
        self.nz, self.num_classes = 4, info.num_classes
        self.net = nn.Linear(4, 16)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(z).view(-1, 1, 4, 4)


def test_generator_output_the_teacher_does_not_take(digits_teacher, workdir, capsys, monkeypatch):
    monkeypatch.setitem(GENERATORS._entries, "test_wrong_shape", lambda info, **_: WrongShapeGenerator(info))
    refused(capsys, distill(digits_teacher, "--set", "generator.name=test_wrong_shape"),
            "generator 'test_wrong_shape' makes samples of shape (1, 4, 4), but the teacher takes (1, 8, 8)",
            "pick a generator for this input")
    assert snapshot(workdir) == {}


# ---------------------------------------------------------------------------------------------
# Checkpoint files


def write_case(case: str, folder: Path, teacher: Path) -> Path:
    path = folder / f"{case}.pt"
    good = teacher.read_bytes()
    if case == "garbage":
        path.write_bytes(b"this is not a checkpoint\x00\x01\x02" * 10)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif case == "flipped":  # one bit of the weights: torch.load would not notice, the digest does
        weights = max(checkpoint.load_model(teacher).model.state_dict().values(), key=lambda t: t.numel())
        at = good.find(weights.numpy().tobytes())
        assert at > 0
        flipped = bytearray(good)
        flipped[at + 5] ^= 0x10
        path.write_bytes(bytes(flipped))
    elif case == "module":
        torch.save(nn.Linear(2, 2), path)
    elif case == "state_dict":
        torch.save(nn.Linear(2, 2).state_dict(), path)
    elif case == "run_checkpoint":
        path = checkpoint.save_run({"step": 1}, folder / "some_run", 1, keep=1)
    elif case == "directory":
        path = folder / "teacher_dir"
        path.mkdir()
    return path


@pytest.mark.parametrize("case, expected", [
    ("missing", ["checkpoint not found: ", "missing.pt; check the path"]),
    ("directory", ["checkpoint path is not a file: ", "pass the .pt file itself"]),
    ("garbage", ["is not a readable checkpoint (corrupt, truncated or not written by datafree); use an intact copy"]),
    ("empty", ["is not a readable checkpoint"]),
    ("truncated", ["is not a readable checkpoint"]),
    ("flipped", ["is corrupt: its contents do not match the checksum saved with them; use an intact copy"]),
    ("module", ["contains pickled Python objects (a whole nn.Module?); datafree refuses to unpickle them",
                "Save weights instead: datafree.save_model(model, info, path)"]),
    ("state_dict", ["holds weights without their architecture; give the function that builds the model: --"]),
    ("run_checkpoint", ["is a run checkpoint, but a model checkpoint (teacher.pt / student.pt) is needed here"]),
])
def test_bad_checkpoint_files(digits_teacher, tmp_path, workdir, capsys, case, expected):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    path = write_case(case, inputs, digits_teacher)
    before = snapshot(workdir)
    refused(capsys, distill(path), *expected)
    refused(capsys, ["evaluate", str(path)], *expected)
    assert snapshot(workdir) == before  # the bad file itself is left alone too


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path, workdir, capsys):
    marker = tmp_path / "it_ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.MODEL_FORMAT, "state_dict": Payload()}, path)
    refused(capsys, distill(path), "contains pickled Python objects")
    refused(capsys, ["evaluate", str(path)], "contains pickled Python objects")
    assert not marker.exists()


# ---------------------------------------------------------------------------------------------
# Existing outputs are never replaced without being asked


def make_old_run(folder: Path, teacher: Path) -> Path:
    """A finished earlier run in folder/run (checkpoints at steps 3 and 6), plus a file of the user's."""
    assert cli.main(["distill", "--teacher", str(teacher), "--run-dir", "run", "--method", "kd", "--quiet", "--steps",
                     "6", "--set", "trainer.checkpoint_every=3", "--set", "student.args.width=4",
                     "--set", "trainer.batch_size=32", "--set", "trainer.eval_every=0"]) == 0
    run = folder / "run"
    (run / "notes.txt").write_text("the user's own file\n")
    return run


def test_an_existing_run_directory_is_not_overwritten(digits_teacher, workdir, capsys):
    make_old_run(workdir, digits_teacher)
    capsys.readouterr()
    before = snapshot(workdir)
    refused(capsys, distill(digits_teacher), "run directory run already exists; pass --resume run to continue it "
                                             "or --overwrite to replace it")
    # --overwrite, but the new run cannot start: the old one is left as it was.
    refused(capsys, distill(digits_teacher, "--overwrite", "--data", "wine"), "pass --data digits")
    assert snapshot(workdir) == before


def test_overwrite_never_deletes_the_teacher_it_reads(workdir, capsys):
    argv = ["train-teacher", "--run-dir", "run", "--quiet", "--steps", "3", "--set", "teacher.args.width=4",
            "--set", "trainer.batch_size=32", "--set", "trainer.eval_every=0"]
    assert cli.main(argv) == 0
    capsys.readouterr()
    before = snapshot(workdir)
    refused(capsys, ["distill", "--teacher", "run/teacher.pt", "--run-dir", "run", "--overwrite", *TINY],
            "--overwrite would delete run/teacher.pt, the teacher this run reads; copy it elsewhere first")
    assert snapshot(workdir) == before


def test_overwrite_replaces_only_what_datafree_wrote(digits_teacher, workdir, capsys):
    run = make_old_run(workdir, digits_teacher)
    (run / "events.out.tfevents.mine").mkdir()  # a folder of the user's that merely looks like a run file
    (run / "events.out.tfevents.mine" / "keep.txt").write_text("mine\n")
    old_events = sorted(p.name for p in run.glob("events.out.tfevents.*.0"))
    assert cli.main(distill(digits_teacher, "--overwrite", "--method", "kd")) == 0
    capsys.readouterr()
    assert (run / "notes.txt").read_text() == "the user's own file\n"
    assert (run / "events.out.tfevents.mine" / "keep.txt").read_text() == "mine\n"
    assert not any((run / name).exists() for name in old_events)
    assert [p.name for p in checkpoint.list_run_checkpoints(run)] == ["step_00000003.pt"]
    assert "steps = 3" in (run / "config.toml").read_text()
    assert checkpoint.load_model(run / "student.pt").info.name == "digits"


def test_overwrite_refuses_a_folder_datafree_did_not_write(digits_teacher, workdir, capsys):
    (workdir / "run").mkdir()
    (workdir / "run" / "config.toml").write_text("# the user's own config\n")
    before = snapshot(workdir)
    refused(capsys, distill(digits_teacher, "--overwrite"), "--overwrite replaces only what a datafree run recorded "
                                                            "writing, and run has no record")
    assert snapshot(workdir) == before


def test_overwrite_refuses_a_manifest_naming_files_outside_the_run(digits_teacher, workdir, capsys):
    """A prepared folder's manifest is not trusted to name what --overwrite deletes outside it."""
    run = make_old_run(workdir, digits_teacher)
    (workdir / "precious.txt").write_text("outside the run\n")
    manifest = run / ".datafree-manifest.json"
    record = json.loads(manifest.read_text())
    record["files"].append("../precious.txt")
    manifest.write_text(json.dumps(record))
    refused(capsys, distill(digits_teacher, "--overwrite"), "has no record")
    assert (workdir / "precious.txt").read_text() == "outside the run\n"


def test_train_teacher_refuses_to_replace_an_existing_out_file(workdir, capsys):
    (workdir / "teacher.pt").write_bytes(b"a teacher trained last week")
    before = snapshot(workdir)
    argv = ["train-teacher", "--out", "teacher.pt", "--run-dir", "trun", "--quiet", "--steps", "3",
            "--set", "teacher.args.width=4", "--set", "trainer.batch_size=32", "--set", "trainer.eval_every=0"]
    refused(capsys, argv,
            "teacher checkpoint teacher.pt already exists; pass --overwrite to replace it or choose another --out")
    assert snapshot(workdir) == before  # refused at start-up: not even a run directory
    assert cli.main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    assert checkpoint.load_model(workdir / "teacher.pt").info.name == "digits"


# ---------------------------------------------------------------------------------------------
# --resume of something that cannot be resumed


def test_resume_of_nothing(workdir, capsys):
    refused(capsys, ["distill", "--resume", "nowhere"], "run directory nowhere not found; nothing to resume")
    (workdir / "empty_run").mkdir()
    refused(capsys, ["distill", "--resume", "empty_run"],
            "no run checkpoint in empty_run/checkpoints; nothing to resume "
            "(start the run without --resume)")
    assert snapshot(workdir) == {"empty_run": None}


def test_resume_with_a_corrupt_latest_checkpoint_names_the_way_back(digits_teacher, workdir, capsys):
    run = make_old_run(workdir, digits_teacher)
    capsys.readouterr()
    latest = run / "checkpoints" / "step_00000006.pt"
    latest.write_bytes(b"half a checkpoint")
    before = snapshot(workdir)
    refused(capsys, ["distill", "--resume", "run"], f"{latest.relative_to(workdir)} is not a readable checkpoint",
            "to resume from the one before, move step_00000006.pt out of run/checkpoints")
    assert snapshot(workdir) == before  # nothing deleted for the user


def test_a_run_directory_that_cannot_be_created(digits_teacher, workdir, capsys):
    (workdir / "a_file").write_text("")
    refused(capsys, ["distill", "--teacher", str(digits_teacher), "--run-dir", "a_file/run", *TINY],
            "could not write a_file/run: part of that path is a file, not a folder; choose another path")


def test_a_read_only_run_directory_is_refused_before_training(digits_teacher, workdir, capsys, monkeypatch):
    run = workdir / "run"
    run.mkdir()
    run.chmod(0o555)
    if os.geteuid() == 0:  # root writes through file modes: the refusal a user would get is simulated
        real_open = os.open

        def read_only_open(path, flags, *args, **kwargs):
            if Path(path).parent == Path("run") and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(os, "open", read_only_open)

    def no_training(*args, **kwargs):
        raise AssertionError("training started in a folder it cannot write to")

    monkeypatch.setattr("datafree.trainer.Trainer.fit", no_training)
    refused(capsys, distill(digits_teacher), "could not write run/.datafree.lock: Permission denied; "
                                             "choose a folder you can write to (--run-dir)")
    run.chmod(0o755)
    assert list(run.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# --debug shows the traceback instead; the real process exits 2


@pytest.mark.parametrize("debug_first", [True, False])
def test_debug_raises_instead_of_one_line(workdir, debug_first):
    argv = ["distill", "--teacher", "missing.pt", "--quiet"]
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        cli.main(["--debug", *argv] if debug_first else [*argv, "--debug"])


@pytest.mark.slow
def test_the_real_process_exits_2_with_one_line_and_shows_the_traceback_with_debug(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "datafree", "distill", "--teacher", "missing.pt", "--quiet"]
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr == ("datafree: error: checkpoint not found: missing.pt; check the path "
                            f"(relative paths start from {tmp_path})\n")
    debug = subprocess.run([*command, "--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0
    assert "Traceback (most recent call last)" in debug.stderr
    assert "datafree.errors.CheckpointError: checkpoint not found: missing.pt" in debug.stderr
    assert list(tmp_path.iterdir()) == []


def test_overwrite_spares_other_files_in_checkpoints(digits_teacher, workdir, capsys):
    """`--run-dir .` in the repository root: checkpoints/ also holds the trained teachers."""
    run = make_old_run(workdir, digits_teacher)
    teachers = run / "checkpoints" / "teachers" / "digits"
    teachers.mkdir(parents=True)
    (teachers / "digits_cnn.pt").write_bytes(digits_teacher.read_bytes())
    (run / "checkpoints" / ".step_00000009.pt.tmp").write_bytes(b"half a write")
    assert cli.main(distill(workdir / "run" / "checkpoints" / "teachers" / "digits" / "digits_cnn.pt",
                            "--overwrite", "--method", "kd")) == 0
    capsys.readouterr()
    assert (teachers / "digits_cnn.pt").read_bytes() == digits_teacher.read_bytes()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003.pt", "teachers"]
