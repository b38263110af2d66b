"""Fault injection against the real command line: kills, planted links, concurrent runs, failing
overwrites, damaged checkpoints, bad configs and a full disk. Every case states what must hold;
the script reports cases tried / held / broke.

    python experiments/fault_injection.py     # ~4 minutes on 2 cores; writes experiments/results/fault_injection.md

Each case runs `python -m datafree ...` in a fresh folder under a temporary root, with a small
digits teacher trained once at the start. Nothing outside that root is touched except the
"outside" files the planted links point to, which are themselves in the temporary root, and a
small tmpfs mount for the full-disk case (skipped, with a message, where mounting is not allowed).
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
SMALL = ["--quiet", "--set", "student.args.width=4", "--set", "trainer.batch_size=32", "--set", "trainer.eval_every=0",
         "--set", "trainer.log_every=5"]


@dataclass
class Case:
    group: str
    name: str
    held: bool | None  # None: skipped
    detail: str


def datafree(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "datafree", *args], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def one_line_exit_2(done: subprocess.CompletedProcess, *needles: str) -> tuple[bool, str]:
    lines = done.stderr.strip().splitlines()
    ok = (done.returncode == 2 and len(lines) == 1 and lines[0].startswith("datafree: error: ")
          and "Traceback" not in done.stderr)
    ok = ok and all(n in lines[0] for n in needles)
    return ok, f"exit {done.returncode}: {(lines or [''])[-1][:160]}"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def tree(folder: Path) -> dict[str, str]:
    def kind(p: Path) -> str:
        return "link->" + os.readlink(p) if p.is_symlink() else digest(p) if p.is_file() else "dir"

    return {str(p.relative_to(folder)): kind(p) for p in sorted(folder.rglob("*"))}


def student_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "student.pt", weights_only=True)["state_dict"]


def identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class Campaign:
    def __init__(self, root: Path) -> None:
        self.root, self.cases, self.counter = root, [], 0
        self.teacher = root / "teacher.pt"
        done = datafree("train-teacher", "--out", str(self.teacher), "--run-dir", str(root / "teacher-run"), "--steps",
                        "100", "--set", "teacher.args.width=8", *SMALL[:1], "--set", "trainer.batch_size=64",
                        "--set", "trainer.eval_every=0", cwd=root)
        assert done.returncode == 0, done.stderr
        self.distill = ["distill", "--teacher", str(self.teacher), "--method", "ours", *SMALL]

    def folder(self) -> Path:
        self.counter += 1
        path = self.root / f"case{self.counter:03d}"
        path.mkdir()
        return path

    def record(self, group: str, name: str, check: Callable[[Path], tuple[bool | None, str]]) -> None:
        try:
            held, detail = check(self.folder())
        except Exception as e:  # noqa: BLE001  a case that crashed the harness broke something
            held, detail = False, f"{type(e).__name__}: {e}"
        self.cases.append(Case(group, name, held, detail))
        mark = {True: "held", False: "BROKE", None: "skipped"}[held]
        print(f"[{mark}] {group}: {name} — {detail}", file=sys.stderr, flush=True)

    # --- kills at random points ------------------------------------------------------------------

    def reference_run(self) -> dict[str, torch.Tensor]:
        folder = self.root / "reference"
        if not (folder / "run" / "student.pt").exists():
            folder.mkdir(exist_ok=True)
            done = datafree(*self.distill, "--steps", "40", "--set", "trainer.checkpoint_every=4", "--run-dir", "run",
                            cwd=folder)
            assert done.returncode == 0, done.stderr
        return student_weights(folder / "run")

    def kill_and_resume(self, folder: Path, sig: int, delay: float) -> tuple[bool, str]:
        process = subprocess.Popen([sys.executable, "-m", "datafree", *self.distill, "--steps", "40", "--set",
                                    "trainer.checkpoint_every=4", "--run-dir", "run"], cwd=folder, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(delay)
        process.send_signal(sig)
        process.wait(timeout=120)
        resumed = datafree("distill", "--resume", "run", "--quiet", cwd=folder)
        if resumed.returncode != 0:
            if "no run checkpoint" in resumed.stderr:  # killed before its first checkpoint: start again is the answer
                again = datafree(*self.distill, "--steps", "40", "--set", "trainer.checkpoint_every=4", "--run-dir",
                                 "run", "--overwrite", cwd=folder)
                return (again.returncode == 0 and identical(student_weights(folder / "run"), self.reference_run()),
                        f"killed before the first checkpoint; a new run with --overwrite started ({again.returncode})")
            return False, f"resume failed: {resumed.stderr.strip()[-160:]}"
        same = identical(student_weights(folder / "run"), self.reference_run())
        return same, f"signal {signal.Signals(sig).name} after {delay:.1f} s (exit {process.returncode}); resumed " \
                     f"weights {'bit-identical' if same else 'DIFFER'}"

    # --- the campaign ------------------------------------------------------------------------

    def run(self) -> list[Case]:
        rng = random.Random(0)
        self.reference_run()
        for i in range(6):
            sig, delay = (signal.SIGKILL, signal.SIGTERM)[i % 2], rng.uniform(2.0, 9.0)
            self.record("kill at a random point", f"#{i + 1}", lambda f, s=sig, d=delay: self.kill_and_resume(f, s, d))

        for name in ("config.toml", "metrics.json", "student.pt", "checkpoints/link.pt"):
            self.record("planted symbolic link", name, lambda f, n=name: self.planted_link(f, n))
        self.record("planted symbolic link", "checkpoints/ -> another run's", self.linked_checkpoints)

        self.record("concurrent start", "a second run in a live run directory",
                    lambda f: self.concurrent(f, resume=False))
        self.record("concurrent start", "--resume of a live run", lambda f: self.concurrent(f, resume=True))
        self.record("concurrent start", "a killed run's lock is taken over", self.stale_lock)

        failing = (("an impossible learning rate (diverges)",
                    ["--set", "student.optim.lr=1e30", "--set", "student.optim.grad_clip=0"], "loss"),
                   ("an impossible batch size", ["--set", "trainer.batch_size=100000000"], "batch_size"),
                   ("a bad setting", ["--set", "student.args.width=-1"], "width"))
        for name, extra, needle in failing:
            self.record("--overwrite, then the new run fails", name,
                        lambda f, e=extra, n=needle: self.overwrite_fails(f, e, n))
        self.record("--overwrite", "spares the user's own files", self.overwrite_spares)

        for name in ("truncated", "bit-flipped", "missing keys", "wrong optimizer shapes", "another architecture",
                     "NaN weights"):
            self.record("damaged run checkpoint", name, lambda f, n=name: self.damaged(f, n))

        for name, data in (("Latin-1", "[trainer]\nsteps = 3 # caf\xe9\n".encode("latin-1")),
                           ("UTF-16", "[trainer]\nsteps = 3\n".encode("utf-16")),
                           ("a checkpoint given as --config", None)):
            self.record("config that is not UTF-8 TOML", name, lambda f, d=data: self.bad_config(f, d))

        self.record("full disk", "a run on a 3 MB tmpfs with 256 kB free", self.full_disk)
        return self.cases

    # --- the cases -----------------------------------------------------------------------------

    def finished_run(self, folder: Path, name: str = "run", steps: str = "6") -> Path:
        done = datafree(*self.distill, "--steps", steps, "--set", "trainer.checkpoint_every=3", "--run-dir", name,
                        cwd=folder)
        assert done.returncode == 0, done.stderr
        return folder / name

    def planted_link(self, folder: Path, name: str) -> tuple[bool, str]:
        run = self.finished_run(folder)
        outside = folder / "outside.txt"
        outside.write_text("the user's file\n")
        target = run / name
        target.unlink(missing_ok=True)
        target.symlink_to(outside)
        (run / "checkpoints" / "step_00000006.pt").unlink()  # so that --resume has work to do
        results = []
        for argv in (["distill", "--resume", "run", "--quiet"], [*self.distill, "--steps", "6", "--run-dir", "run",
                                                                  "--overwrite"]):
            done = datafree(*argv, cwd=folder)
            ok, detail = one_line_exit_2(done, "symbolic link")
            results.append(ok)
        unchanged = outside.read_text() == "the user's file\n"
        return all(results) and unchanged, (f"resume and overwrite refused: {results}; "
                                            f"outside file unchanged: {unchanged}")

    def linked_checkpoints(self, folder: Path) -> tuple[bool, str]:
        other = self.finished_run(folder, "other")
        before = tree(other)
        run = self.finished_run(folder, "run")
        shutil.rmtree(run / "checkpoints")
        (run / "checkpoints").symlink_to(other / "checkpoints")
        done = datafree(*self.distill, "--steps", "6", "--run-dir", "run", "--overwrite", cwd=folder)
        ok, detail = one_line_exit_2(done, "symbolic link")
        return ok and tree(other) == before, detail

    def concurrent(self, folder: Path, resume: bool) -> tuple[bool, str]:
        first = subprocess.Popen([sys.executable, "-m", "datafree", *self.distill, "--steps", "400", "--set",
                                  "trainer.checkpoint_every=5", "--run-dir", "run"], cwd=folder, env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):  # until the first run holds its directory and has a checkpoint
                if list((folder / "run" / "checkpoints").glob("step_*.pt")):
                    break
                time.sleep(0.1)
            argv = ["distill", "--resume", "run", "--quiet"] if resume else [*self.distill, "--steps", "6", "--run-dir",
                                                                              "run", "--overwrite"]
            done = datafree(*argv, cwd=folder)
            return one_line_exit_2(done, "is in use by process")
        finally:
            first.kill()
            first.wait()

    def stale_lock(self, folder: Path) -> tuple[bool, str]:
        process = subprocess.Popen([sys.executable, "-m", "datafree", *self.distill, "--steps", "400", "--set",
                                    "trainer.checkpoint_every=5", "--run-dir", "run"], cwd=folder, env=ENV,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if list((folder / "run" / "checkpoints").glob("step_*.pt")):
                break
            time.sleep(0.1)
        process.kill()
        process.wait()
        done = datafree("distill", "--resume", "run", "--quiet", cwd=folder)
        return done.returncode == 0, f"resume after SIGKILL: exit {done.returncode}"

    def overwrite_fails(self, folder: Path, extra: list[str], needle: str) -> tuple[bool, str]:
        run = self.finished_run(folder)
        before = tree(run)
        done = datafree(*self.distill, "--steps", "6", "--run-dir", "run", "--overwrite", *extra, cwd=folder)
        after = {k: v for k, v in tree(run).items() if not k.startswith(".datafree")}
        kept = after == {k: v for k, v in before.items() if not k.startswith(".datafree")}
        lines = done.stderr.strip().splitlines()
        one_line = done.returncode != 0 and len(lines) == 1 and "Traceback" not in done.stderr
        return kept and one_line, f"exit {done.returncode}: {(lines or [''])[-1][:140]}; old run intact: {kept}"

    def overwrite_spares(self, folder: Path) -> tuple[bool, str]:
        run = self.finished_run(folder)
        (run / "notes.txt").write_text("mine\n")
        (run / "events.out.tfevents.mine").mkdir()
        done = datafree(*self.distill, "--steps", "6", "--run-dir", "run", "--overwrite", cwd=folder)
        kept = (run / "notes.txt").read_text() == "mine\n" and (run / "events.out.tfevents.mine").is_dir()
        return done.returncode == 0 and kept, f"exit {done.returncode}; the user's files kept: {kept}"

    def damaged(self, folder: Path, how: str) -> tuple[bool, str]:
        from datafree import checkpoint

        run = self.finished_run(folder)
        latest = run / "checkpoints" / "step_00000006.pt"
        if how == "truncated":
            latest.write_bytes(latest.read_bytes()[:5000])
        elif how == "bit-flipped":
            data = bytearray(latest.read_bytes())
            data[len(data) // 2] ^= 0x10
            latest.write_bytes(bytes(data))
        else:
            state = checkpoint.safe_load(latest, checkpoint.RUN_FORMAT)
            if how == "missing keys":
                del state["players"]
            elif how == "wrong optimizer shapes":
                opt = state["players"]["student"]["optimizer"]["state"]
                first = next(iter(opt))
                opt[first]["momentum_buffer"] = torch.zeros(3)
            elif how == "another architecture":
                state["models"]["student"] = {k: torch.zeros(2, 2) for k in state["models"]["student"]}
            elif how == "NaN weights":
                weights = state["models"]["student"]
                key = next(k for k, v in weights.items() if v.is_floating_point())
                weights[key] = torch.full_like(weights[key], float("nan"))
            checkpoint.atomic_save(checkpoint.sealed({k: v for k, v in state.items() if k != "digest"}), latest)
        (run / "student.pt").unlink()  # so that the resume must read the damaged checkpoint
        done = datafree("distill", "--resume", "run", "--quiet", cwd=folder)
        return one_line_exit_2(done)

    def bad_config(self, folder: Path, data: bytes | None) -> tuple[bool, str]:
        path = folder / "config.toml"
        if data is None:
            shutil.copy(self.teacher, path)
        else:
            path.write_bytes(data)
        done = datafree("distill", "--config", "config.toml", "--teacher", str(self.teacher), cwd=folder)
        return one_line_exit_2(done, "not UTF-8")

    def full_disk(self, folder: Path) -> tuple[bool | None, str]:
        mount = folder / "small"
        mount.mkdir()
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                                 text=True)
        if mounted.returncode != 0:
            return None, f"skipped: cannot mount a tmpfs here ({mounted.stderr.strip()[:100]})"
        try:
            # Leave ~256 kB free: less than the run's first checkpoint, so the disk fills while it is written.
            free = shutil.disk_usage(mount).free
            (mount / "filler").write_bytes(bytes(max(0, free - 256 * 1024)))
            done = datafree(*self.distill, "--steps", "6", "--set", "trainer.checkpoint_every=3", "--run-dir",
                            str(mount / "run"), "--set", "generator.replay_mb=64", cwd=folder)
            ok, detail = one_line_exit_2(done, "disk is full")
            leftovers = [p.name for p in (mount / "run").rglob("*.tmp")] if (mount / "run").exists() else []
            return ok and not leftovers, f"{detail}; temporary files left: {leftovers or 'none'}"
        finally:
            subprocess.run(["umount", str(mount)], capture_output=True)


def main() -> None:
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="datafree-faults-") as tmp:
        cases = Campaign(Path(tmp)).run()
    tried = [c for c in cases if c.held is not None]
    held = [c for c in tried if c.held]
    lines = ["# Fault injection", "",
             f"`python experiments/fault_injection.py`, {time.strftime('%Y-%m-%d %H:%M')}, "
             f"{time.time() - started:.0f} s: "
             f"**{len(tried)} cases tried, {len(held)} held, {len(tried) - len(held)} broke**, "
             f"{len(cases) - len(tried)} skipped.", "",
             "| group | case | result | detail |", "|---|---|---|---|"]
    for c in cases:
        result = {True: "held", False: "**broke**", None: "skipped"}[c.held]
        lines.append(f"| {c.group} | {c.name} | {result} | {c.detail.replace('|', '/')} |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fault_injection.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "fault_injection.json").write_text(json.dumps([c.__dict__ for c in cases], indent=1) + "\n")
    print("\n".join(lines))
    sys.exit(0 if len(held) == len(tried) else 1)


if __name__ == "__main__":
    main()
