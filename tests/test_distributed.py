"""Data-parallel training under torchrun: 2 CPU processes with the gloo backend.

One launch of tests/ddp_worker.py runs, through the real CLI, a data-free method (`ours`:
generator, replay pool, augmentation) uninterrupted, the same run stopped by a SIGTERM that only
rank 1 receives, and `gankd` on real data with a feature discriminator (discriminator in DDP, its
student-side adapter outside it). A second launch resumes the stopped run. Each rank saves its
own networks, so the ranks can be compared with each other and with a single-process run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datafree import api, cli
from datafree.config import load
from datafree.errors import ConfigError

pytestmark = pytest.mark.slow  # every test here starts real processes

WORKER = Path(__file__).with_name("ddp_worker.py")
# a new generator at step 3 (generator.reset_every): each rank re-draws it, so ranks agree only if rank 0's is shared
SETTINGS = ["--steps", "4", "--device", "cpu", "--quiet",
            "--set", "trainer.batch_size=32", "--set", "trainer.log_every=2", "--set", "trainer.checkpoint_every=2",
            "--set", "trainer.eval_every=0", "--set", "trainer.image_every=0", "--set", "student.args.width=4",
            "--set", "generator.reset_every=3"]


def distill_argv(teacher: Path, method: str, run_dir: Path, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--method", method, "--run-dir", str(run_dir), *SETTINGS, *extra]


def launch(jobs: list[dict], folder: Path) -> None:
    """Run the jobs in 2 processes; fail with both processes' output if the launch fails."""
    jobs_file = folder / f"jobs-{len(list(folder.glob('jobs-*')))}.json"
    jobs_file.write_text(json.dumps(jobs))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(WORKER), str(jobs_file)], env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def ranks(out: Path) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.fixture(scope="module")
def runs(digits_teacher, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ddp")
    launch([
        {"argv": distill_argv(digits_teacher, "ours", root / "ours"), "out": str(root / "out-ours")},
        {"argv": distill_argv(digits_teacher, "ours", root / "stopped"), "out": str(root / "out-stopped"),
         "stop": {"rank": 1, "step": 2}},  # SIGTERM during step 3, on rank 1 only
        {"argv": distill_argv(digits_teacher, "gankd", root / "gankd", "--set", "discriminator.name=feature"),
         "out": str(root / "out-gankd")},
    ], root)
    shutil.copytree(root / "stopped", root / "stopped-copy")  # to try resuming in one process
    launch([{"argv": ["distill", "--resume", str(root / "stopped"), "--quiet"],
             "out": str(root / "out-resumed")}], root)
    assert cli.main(distill_argv(digits_teacher, "ours", root / "single")) == 0
    return root


def test_ranks_hold_identical_networks_after_training(runs):
    for method, players in (("ours", {"student", "generator"}), ("gankd", {"student", "discriminator"})):
        rank0, rank1 = ranks(runs / f"out-{method}")
        assert rank0["exit_code"] == rank1["exit_code"] == 0 and rank0["step"] == 4
        assert set(rank0["models"]) == players
        if method == "gankd":  # the feature discriminator's adapter trains with the student, outside DDP
            assert "adapter.weight" in rank0["models"]["discriminator"]
        for player in players:  # parameters and buffers (BatchNorm running statistics) alike
            for name, value in rank0["models"][player].items():
                assert torch.equal(value, rank1["models"][player][name]), (
                    f"{method}: {player}.{name} differs across ranks")
        # while each rank trained on its own batches (own noise, own data shard)
        assert rank0["local_losses"]["loss/student/total"] != rank1["local_losses"]["loss/student/total"]


def test_gradients_are_averaged_so_two_processes_differ_from_one(runs):
    """Rank 0 draws the same noise as a single process; only averaging with rank 1 can move it elsewhere."""
    rank0, _ = ranks(runs / "out-ours")
    single = torch.load(runs / "single" / "student.pt", weights_only=True)["state_dict"]
    weights = [k for k, v in single.items() if k.endswith("weight")]
    assert weights and all(not torch.equal(single[k], rank0["models"]["student"][k]) for k in weights)


def run_files(run_dir: Path) -> list[str]:
    names = (str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file())
    return sorted("<events>" if n.startswith("events.out.tfevents") else n for n in names)


def test_run_directory_is_written_once_in_the_single_process_format(runs):
    ddp, single = runs / "ours", runs / "single"
    assert run_files(ddp) == run_files(single) == [".datafree-manifest.json", ".datafree.lock", "<events>",
                                                    "checkpoints/step_00000002.pt", "checkpoints/step_00000004.pt",
                                                    "config.toml", "metrics.json", "student.pt"]
    ddp_cfg, single_cfg = load(ddp / "config.toml").to_dict(), load(single / "config.toml").to_dict()
    ddp_cfg["run"].pop("dir"), single_cfg["run"].pop("dir")
    assert ddp_cfg == single_cfg
    metrics, single_metrics = (json.loads((ddp / "metrics.json").read_text()),
                               json.loads((single / "metrics.json").read_text()))
    assert metrics.keys() == single_metrics.keys()
    assert metrics["synthetic_samples"] == 2 * single_metrics["synthetic_samples"]  # both ranks' samples counted
    assert metrics["student_steps"] == single_metrics["student_steps"]
    # test accuracy summed over the two ranks' shards = the saved student on the whole test set
    assert metrics["student_accuracy"] == pytest.approx(api.evaluate(ddp / "student.pt")["accuracy"], abs=1e-9)
    rank0, rank1 = ranks(runs / "out-ours")
    written = sorted(Path(w).name for w in rank0["writes"] if not w.endswith(".datafree-manifest.json"))
    assert rank1["writes"] == [] and written == [
        "config.toml", "metrics.json", "step_00000002.pt", "step_00000004.pt", "student.pt"]  # each written once
    saved = torch.load(ddp / "student.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(v, rank0["models"]["student"][k]) for k, v in saved.items())


def test_logged_losses_are_averaged_across_ranks(runs):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(runs / "ours"))
    events.Reload()
    logged = {e.step: e.value for e in events.Scalars("loss/student/total")}
    rank0, rank1 = ranks(runs / "out-ours")
    local = [r["local_losses"]["loss/student/total"] for r in (rank0, rank1)]
    assert logged[4] == pytest.approx(sum(local) / 2, rel=1e-5)
    assert logged[4] != pytest.approx(local[0], rel=1e-5)


def test_a_stop_on_one_rank_stops_both_and_resume_continues_exactly(runs):
    stopped = ranks(runs / "out-stopped")
    assert [r["exit_code"] for r in stopped] == [130, 130] and [r["step"] for r in stopped] == [3, 3]
    assert (runs / "stopped" / "checkpoints" / "step_00000003.pt").is_file()
    uninterrupted, resumed = ranks(runs / "out-ours"), ranks(runs / "out-resumed")
    for rank in range(2):
        assert resumed[rank]["step"] == 4
        for player, state in uninterrupted[rank]["models"].items():
            for name, value in state.items():
                assert torch.equal(value, resumed[rank]["models"][player][name]), f"rank {rank}: {player}.{name}"


def test_resume_with_another_number_of_processes_is_refused(runs):
    with pytest.raises(ConfigError, match="saved by 2 process"):
        api.resume(runs / "stopped-copy", quiet=True)
    assert run_files(runs / "stopped-copy") == [  # nothing written, nothing lost
        ".datafree-manifest.json", ".datafree.lock", "<events>", "checkpoints/step_00000002.pt",
        "checkpoints/step_00000003.pt", "config.toml"]
