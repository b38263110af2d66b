"""Run directories: where a run writes, what --overwrite may remove, and nothing else."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

from datafree import checkpoint
from datafree.config import Config
from datafree.distributed import Dist, barrier
from datafree.errors import ConfigError

RUN_FILES = ("config.toml", "metrics.json", "student.pt", "teacher.pt")


def prepare_run_dir(cfg: Config, command: str, dist: Dist, label: str) -> Path:
    """The run directory: refuse to reuse a non-empty one unless run.overwrite is set, and then
    remove only the files datafree itself writes there. train-teacher likewise refuses to replace
    an existing --out file without run.overwrite (and then replaces it only when done)."""
    if cfg.run.dir:
        run_dir = Path(cfg.run.dir)
    else:
        name = label if command == "train-teacher" else f"{cfg.method.name}-{label}"
        data = cfg.data.name or "x".join(map(str, cfg.data.input_shape))
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{command}-{data}-{name}-s{cfg.trainer.seed}-{stamp}"
        suffix = 1
        while run_dir.exists():
            run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
            suffix += 1
    if dist.is_main:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"run directory {run_dir} is a file; choose another --run-dir")
        out = Path(cfg.teacher.checkpoint) if command == "train-teacher" and cfg.teacher.checkpoint else None
        if out is not None and out.exists() and not cfg.run.overwrite:
            raise ConfigError(f"teacher checkpoint {out} already exists; pass --overwrite to replace it or choose another --out")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            if not cfg.run.overwrite:
                raise ConfigError(f"run directory {run_dir} already exists; pass --resume {run_dir} to continue it "
                                  f"or --overwrite to replace it")
            teacher = real_path(Path(cfg.teacher.checkpoint)) if command != "train-teacher" and cfg.teacher.checkpoint else None
            if teacher is not None and any(teacher == e or e in teacher.parents for e in map(real_path, run_files(run_dir))):
                raise ConfigError(f"--overwrite would delete {cfg.teacher.checkpoint}, the teacher this run reads; "
                                  f"copy it elsewhere first or choose another --run-dir")
            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(dist)
    return run_dir


def run_files(run_dir: Path) -> list[Path]:
    """What datafree writes in a run directory (and --overwrite removes): never the whole of
    checkpoints/, only the run checkpoints in it."""
    found = [entry for entry in run_dir.iterdir() if entry.name in RUN_FILES or entry.name.startswith("events.out.tfevents")]
    # checkpoints/ may hold other files too (e.g. checkpoints/teachers/ with --run-dir .)
    return found + checkpoint.list_run_checkpoints(run_dir) + checkpoint.unfinished_writes(run_dir)


def real_path(path: Path) -> Path:
    """`path` with its folder resolved but not a final symbolic link (deleting a link spares its target)."""
    return path.absolute().parent.resolve() / path.name


def clear_run_dir(run_dir: Path) -> None:
    for entry in run_files(run_dir):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    folder = run_dir / "checkpoints"
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()
