"""Runs survive being stopped: a real `datafree distill` subprocess is killed (SIGKILL) or asked to
stop (SIGTERM, SIGINT) part-way, resumed with `--resume RUN_DIR`, and must end with a student
bit-identical to an uninterrupted run with the same seed (on the CPU, one thread).

`ours` is the hard case (generator, replay pool, kornia augmentation: every RNG stream and buffer
must come back); `kd` covers the real-data stream position. The uninterrupted reference runs
start in the background as soon as the module needs them, beside the runs that get interrupted.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datafree import checkpoint, cli
from datafree.files import WriteError

# Steps per method: long enough that a run is still going well after its second checkpoint
# (kd steps take a few milliseconds, ours steps tens of them).
STEPS = {"ours": 40, "kd": 200}
SETTINGS = ["--quiet", "--seed", "3", "--set", "student.args.width=4", "--set", "trainer.batch_size=32",
            "--set", "trainer.checkpoint_every=5", "--set", "trainer.threads=1", "--set", "trainer.eval_every=0",
            "--set", "trainer.image_every=0", "--set", "trainer.log_every=5"]
# A pool of 256 fills within a few steps, so the resumed runs replace samples in it (reservoir draws);
# a new generator every 7 steps, so resumed runs re-create it too
METHOD_SETTINGS = {"ours": ["--set", "generator.replay_size=256", "--set", "generator.reset_every=7"], "kd": []}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def datafree(*args: str) -> subprocess.Popen:
    # SIGINT as in a terminal, even where these tests run in a script's background job (which ignores it)
    return subprocess.Popen([sys.executable, "-m", "datafree", *args], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def distill(teacher: Path, method: str, run_dir: Path) -> subprocess.Popen:
    return datafree("distill", "--teacher", str(teacher), "--method", method, "--steps", str(STEPS[method]),
                    "--run-dir", str(run_dir), *SETTINGS, *METHOD_SETTINGS[method])


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def succeed(proc: subprocess.Popen) -> str:
    code, out, err = finish(proc)
    assert code == 0, f"exit {code}\n{out}\n{err}"
    return out


def saved_steps(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name[5:13]) for p in folder.glob("step_*.pt")) if folder.is_dir() else []


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, min_step: int, timeout: float = 60) -> int:
    """Poll until the run has written a checkpoint of at least `min_step`; returns that step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = saved_steps(run_dir)
        if steps and steps[-1] >= min_step:
            return steps[-1]
        assert proc.poll() is None, "the run ended before it could be interrupted:\n" + proc.stderr.read()
        time.sleep(0.003)
    proc.kill()
    raise AssertionError(f"no checkpoint >= step {min_step} within {timeout} s")


def resume(run_dir: Path) -> subprocess.Popen:
    return datafree("distill", "--resume", str(run_dir), "--quiet")


def student_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.safe_load(run_dir / "student.pt", checkpoint.MODEL_FORMAT)["state_dict"]


def assert_bit_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"student entries differ after resuming: {different}"


class References:
    """Uninterrupted runs, started in the background on first use and awaited when compared with."""

    def __init__(self, teacher: Path, root: Path) -> None:
        self.teacher, self.root, self.procs = teacher, root, {}

    def start(self, method: str) -> None:
        if method not in self.procs:
            self.procs[method] = distill(self.teacher, method, self.root / method)

    def weights(self, method: str) -> dict[str, torch.Tensor]:
        self.start(method)
        proc = self.procs[method]
        if proc.returncode is None:
            succeed(proc)
        return student_weights(self.root / method)


@pytest.fixture(scope="module")
def references(digits_teacher, tmp_path_factory):
    refs = References(digits_teacher, tmp_path_factory.mktemp("reference"))
    for method in STEPS:  # both in the background from the start, beside the interrupted runs
        refs.start(method)
    yield refs
    for proc in refs.procs.values():  # never leave a background run behind
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def interrupt(proc: subprocess.Popen, run_dir: Path, signum: int, min_step: int, steps: int) -> int:
    """Send `signum` once the run has saved a checkpoint of at least `min_step`; returns the step of
    the latest checkpoint afterwards. SIGKILL just ends it; after SIGTERM/SIGINT the run must
    finish its step, save, exit with status 130 and say how to resume."""
    seen = wait_for_checkpoint(proc, run_dir, min_step)
    proc.send_signal(signum)
    code, _, err = finish(proc)
    last = saved_steps(run_dir)[-1]
    assert seen <= last < steps
    assert not (run_dir / "student.pt").exists(), "the run had finished before the signal"
    if signum == signal.SIGKILL:
        assert code == -signal.SIGKILL
    else:
        assert code == 130, err
        assert f"stopped at step {last}" in err and f"step_{last:08d}.pt" in err
        assert f"datafree distill --resume {run_dir}" in err
        assert "Traceback" not in err
    return last


# Each run is interrupted twice, in both orders across the two methods, so that a run which was
# itself resumed is resumed again: SIGKILL then SIGTERM (ours), SIGINT then SIGKILL (kd).
@pytest.mark.slow
@pytest.mark.parametrize("method, first, second", [("ours", signal.SIGKILL, signal.SIGTERM),
                                                   ("kd", signal.SIGINT, signal.SIGKILL)])
def test_killed_or_stopped_runs_resume_to_bit_identical_weights(method, first, second, references, digits_teacher,
                                                                tmp_path):
    run_dir = tmp_path / "run"
    step = 0
    for i, signum in enumerate((first, second)):
        proc = distill(digits_teacher, method, run_dir) if i == 0 else resume(run_dir)
        step = interrupt(proc, run_dir, signum, min_step=step + 5, steps=STEPS[method])
    out = succeed(resume(run_dir))
    assert f"saved {run_dir / 'student.pt'}" in out
    assert_bit_identical(student_weights(run_dir), references.weights(method))


@pytest.mark.slow  # builds reference runs (the module's `references` fixture)
def test_resuming_a_finished_run_changes_nothing_and_says_so(references, capsys):
    references.weights("kd")
    run_dir = references.root / "kd"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert cli.main(["distill", "--resume", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert f"run {run_dir} had already finished; nothing to resume" in out
    assert f"saved {run_dir / 'student.pt'}" in out  # and where its model is
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.slow  # builds reference runs (the module's `references` fixture)
def test_a_run_stopped_between_its_last_checkpoint_and_its_model_file_finishes_on_resume(references, tmp_path, capsys):
    """Killed after the final checkpoint but before student.pt / metrics.json were written."""
    reference = references.weights("kd")
    run_dir = tmp_path / "run"
    shutil.copytree(references.root / "kd", run_dir)
    (run_dir / "student.pt").unlink()
    (run_dir / "metrics.json").unlink()
    threads = torch.get_num_threads()  # the run sets trainer.threads=1 for this process
    try:
        assert cli.main(["distill", "--resume", str(run_dir), "--quiet"]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "already finished" not in capsys.readouterr().out
    assert_bit_identical(student_weights(run_dir), reference)
    assert (run_dir / "metrics.json").is_file()


@pytest.mark.slow  # builds reference runs (the module's `references` fixture)
@pytest.mark.parametrize("damage", ["missing keys", "wrong optimizer shapes", "another architecture"])
def test_a_run_checkpoint_that_does_not_fit_the_run_is_refused_in_one_line(references, tmp_path, capsys, damage):
    references.weights("kd")
    run_dir = tmp_path / "run"
    shutil.copytree(references.root / "kd", run_dir)
    (run_dir / "student.pt").unlink()  # so that the resume reads the checkpoint
    latest = checkpoint.list_run_checkpoints(run_dir)[-1]
    state = checkpoint.safe_load(latest, checkpoint.RUN_FORMAT)
    if damage == "missing keys":
        del state["players"]
    elif damage == "wrong optimizer shapes":
        optimizer_state = state["players"]["student"]["optimizer"]["state"]
        optimizer_state[next(iter(optimizer_state))]["momentum_buffer"] = torch.zeros(3)
    else:
        state["models"]["student"] = {k: torch.zeros(2, 2) for k in state["models"]["student"]}
    checkpoint.atomic_save(checkpoint.sealed({k: v for k, v in state.items() if k != "digest"}), latest)
    assert cli.main(["distill", "--resume", str(run_dir), "--quiet"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "does not fit this run" in error, error
    assert not (run_dir / "student.pt").exists()


@pytest.mark.slow  # builds reference runs (the module's `references` fixture)
def test_resume_refuses_a_teacher_file_that_changed(references, digits_teacher, tmp_path, capsys):
    references.weights("kd")
    run_dir = tmp_path / "run"
    shutil.copytree(references.root / "kd", run_dir)
    (run_dir / "student.pt").unlink()  # (else the finished run would just be reported)
    other = checkpoint.load_model(digits_teacher)  # same weights, another file: resaved with other metrics
    teacher = checkpoint.save_model(other.model, other.info, tmp_path / "teacher.pt", other.arch,
                                    {"test_accuracy": 1.0})
    state = checkpoint.load_latest_run(run_dir)
    state["config"]["teacher"]["checkpoint"] = str(teacher)
    checkpoint.save_run({k: v for k, v in state.items() if k != "format"}, run_dir, state["step"], keep=2)
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert cli.main(["distill", "--resume", str(run_dir)]) == 2
    assert capsys.readouterr().err == (f"datafree: error: teacher file {teacher} changed since this run started, "
                                       f"so resuming would not continue the same run; put the original file back "
                                       f"(or start a new run with this teacher)\n")
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("extra, named", [
    (["--steps", "50"], "--steps"),
    (["--set", "trainer.batch_size=64"], "--set"),
    (["--overwrite"], "--overwrite"),
    (["--seed", "4"], "--seed"),
    (["--method", "dfad"], "--method"),
])
@pytest.mark.slow  # builds reference runs (the module's `references` fixture)
def test_resume_refuses_options_that_would_change_the_run(references, capsys, extra, named):
    references.weights("kd")
    run_dir = references.root / "kd"
    before = {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    assert cli.main(["distill", "--resume", str(run_dir), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"datafree: error: --resume continues {run_dir} exactly") and f"drop {named}" in err
    assert f"--config {run_dir}/config.toml" in err  # the way to change settings
    assert {p: p.read_bytes() for p in run_dir.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("extra, named", [(["--seed", "0"], "--seed"), (["--steps", "0"], "--steps"),
                                          (["--data-root", ""], "--data-root")])
def test_resume_refuses_options_given_with_a_false_value(tmp_path, capsys, extra, named):
    """A given option counts even when its value is 0 or empty (refused before the run is even read)."""
    assert cli.main(["distill", "--resume", str(tmp_path / "run"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"datafree: error: --resume continues {tmp_path / 'run'} exactly") and f"drop {named} " in err


class SlowToPickle:
    """Stands for a large object: the process writing it is still inside the write when it is killed."""

    def __init__(self, ready_fd: int) -> None:
        self.ready_fd = ready_fd

    def __reduce__(self):
        os.write(self.ready_fd, b"w")
        time.sleep(60)
        return (int, (0,))


def test_a_kill_during_a_checkpoint_write_leaves_the_latest_checkpoint_whole(tmp_path):
    """A process is SIGKILLed in the middle of writing step 10's checkpoint: step 5's stays the
    latest, whole and loadable, and the next save clears the half-written temporary file."""
    checkpoint.save_run({"step": 5, "w": torch.arange(4.0)}, tmp_path, 5, keep=2)
    ready_read, ready_write = os.pipe()
    pid = os.fork()  # a real second process, without paying for another interpreter start
    if pid == 0:
        try:
            checkpoint.save_run({"step": 10, "w": torch.ones(1000), "big": SlowToPickle(ready_write)},
                                tmp_path, 10, keep=2)
        finally:
            os._exit(1)
    assert os.read(ready_read, 1) == b"w"
    os.kill(pid, signal.SIGKILL)
    assert os.waitpid(pid, 0)[1] == signal.SIGKILL
    os.close(ready_read), os.close(ready_write)

    assert [p.name for p in checkpoint.list_run_checkpoints(tmp_path)] == ["step_00000005.pt"]
    debris = list((tmp_path / "checkpoints").glob(".step_00000010.pt.*.tmp"))
    assert len(debris) == 1  # the interrupted write
    state = checkpoint.load_latest_run(tmp_path)
    assert state["step"] == 5 and torch.equal(state["w"], torch.arange(4.0))
    checkpoint.save_run({"step": 10, "w": torch.ones(3)}, tmp_path, 10, keep=2)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_00000005.pt", "step_00000010.pt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "student.pt"
    checkpoint.atomic_save({"v": torch.zeros(3)}, path)

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(WriteError, match=r"could not write .*student.pt: the disk is full; free some space"):
        checkpoint.atomic_save({"v": torch.ones(3)}, path)
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["student.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.zeros(3))
