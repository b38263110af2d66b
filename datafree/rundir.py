"""Run directories: one live run each, nothing written through links, and `--overwrite` that
replaces only what a datafree run wrote, and only once the new run has proved it can run.

- **Lock**: a run holds an OS lock (`flock`) on `<run dir>/.datafree.lock` for its whole life; a
  second process asking for the same directory is refused with the first one's process id. The
  OS drops the lock when its process dies, so a killed run's lock is simply taken over.
- **Links**: a run directory containing symbolic links (its files, `checkpoints/` or anything in
  it) is refused, and every write goes through `files.atomic_write`, which never follows one.
- **Manifest**: `<run dir>/.datafree-manifest.json` lists every file the run wrote. `--overwrite`
  deletes exactly those (never your own files in the same folder), and a folder without a
  manifest is not overwritten at all.
- **Build beside, then swap**: with `--overwrite` the new run writes into `<run dir>/.datafree-new/`
  and replaces the old run's files only when it has saved its first checkpoint. A new run that
  fails before that (a bad setting, out of memory, a loss that diverges at step 2) leaves the old
  run as it was.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import time
from pathlib import Path

from datafree import checkpoint
from datafree.config import Config
from datafree.errors import ConfigError
from datafree.files import write_failure, write_text

LOCK = ".datafree.lock"
MANIFEST = ".datafree-manifest.json"
STAGING = ".datafree-new"
OWN = {LOCK, MANIFEST, STAGING}


def default_run_dir(cfg: Config, command: str, label: str) -> Path:
    name = label if command == "train-teacher" else f"{cfg.method.name}-{label}"
    data = cfg.data.name or "x".join(map(str, cfg.data.input_shape))
    run_dir = Path("runs") / f"{command}-{data}-{name}-s{cfg.trainer.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    suffix = 1
    while run_dir.exists():
        run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
        suffix += 1
    return run_dir


def links_in(run_dir: Path) -> list[Path]:
    """Symbolic links among the run directory's entries, its checkpoints/ folder and what that holds."""
    found = []
    for entry in run_dir.iterdir():
        if entry.is_symlink():
            found.append(entry)
        elif entry.name in ("checkpoints", STAGING) and entry.is_dir():
            found += [e for e in entry.iterdir() if e.is_symlink()]
    return found


def refuse_links(run_dir: Path) -> None:
    found = links_in(run_dir)
    if found:
        raise ConfigError(f"run directory {run_dir} contains a symbolic link ({found[0]} -> {os.readlink(found[0])}); "
                          f"datafree writes only real files inside its run directories: remove the link, or choose "
                          f"another --run-dir")


class RunDirectory:
    """The folder a run writes to, locked for the run's life; `path` is where files go now (the
    staging folder until an overwriting run swaps, then the run directory itself)."""

    def __init__(self, root: Path, overwrite: bool = False, protect: Path | None = None, resume: bool = False) -> None:
        self.root = root
        self.protect = protect  # a file the run reads (its teacher): never deleted by --overwrite
        self.lock_fd: int | None = None
        if root.exists() and not root.is_dir():
            raise ConfigError(f"run directory {root} is a file; choose another --run-dir")
        self.created = not root.exists()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_failure(root, e) from None
        self.lock_created = not (root / LOCK).exists()
        try:
            self.lock()
            refuse_links(root)
            self.old = self.read_manifest()
            self.written: set[str] = set()
            self.path = root
            if resume:  # the stopped run's own files, continued in place
                self.written, self.old = set(self.old or ()), None
            elif self.has_other_contents():
                if not overwrite:
                    raise ConfigError(f"run directory {root} already exists; pass --resume {root} to continue it "
                                      f"or --overwrite to replace it")
                self.check_overwrite()
                self.path = root / STAGING
                shutil.rmtree(self.path, ignore_errors=True)  # what a failed earlier attempt left
                self.path.mkdir()
            else:
                self.write_manifest()  # from the start: a run killed at once is still known to be ours
            self.say_holder()
        except BaseException:  # refused: leave the folder as it was found
            self.unlock(remove=self.lock_created)
            if self.created:
                shutil.rmtree(root, ignore_errors=True)
            raise

    # --- the lock ----------------------------------------------------------------------------

    def lock(self) -> None:
        path = self.root / LOCK
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            if path.is_symlink():
                raise ConfigError(f"run directory {self.root} contains a symbolic link ({path}); remove it") from None
            raise write_failure(path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(f"run directory {self.root} is in use by {holder}; wait for that run to end, "
                              f"or choose another --run-dir") from None
        self.lock_fd = fd

    def say_holder(self) -> None:
        """Who holds the lock, for the message a second process gets (written once the run is accepted)."""
        os.ftruncate(self.lock_fd, 0)
        os.pwrite(self.lock_fd, f"process {os.getpid()} on {socket.gethostname()} since "
                                f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)

    def unlock(self, remove: bool = False) -> None:
        if self.lock_fd is not None:
            if remove:  # (while still holding the lock: nobody else can be using the file)
                (self.root / LOCK).unlink(missing_ok=True)
            os.close(self.lock_fd)  # the OS releases the flock with the descriptor
            self.lock_fd = None

    # --- what the run wrote ------------------------------------------------------------------

    def read_manifest(self) -> set[str] | None:
        path = self.root / MANIFEST
        if not path.is_file():
            return None
        try:
            names = set(json.loads(path.read_text())["files"])
        except (ValueError, KeyError, TypeError, OSError):
            return None  # unreadable: treated as "not known to be ours"
        # A prepared folder's manifest must not name files outside it (--overwrite deletes what it names).
        if not all(isinstance(n, str) and n and not Path(n).is_absolute() and ".." not in Path(n).parts
                   for n in names):
            return None
        return names

    def has_other_contents(self) -> bool:
        return any(e.name not in OWN for e in self.root.iterdir())

    def check_overwrite(self) -> None:
        if self.old is None:
            raise ConfigError(f"--overwrite replaces only what a datafree run recorded writing, and {self.root} has no "
                              f"record ({MANIFEST}): it is not a run directory of this datafree version; remove its "
                              f"files yourself, or choose another --run-dir")
        ours = ("config.toml", "metrics.json", "student.pt", "teacher.pt")
        clash = [e.name for e in self.root.iterdir() if e.name in ours and e.name not in self.old]
        clash += [f"checkpoints/{e.name}" for e in (self.root / "checkpoints").glob("step_*.pt")
                  if f"checkpoints/{e.name}" not in self.old]
        if clash:
            raise ConfigError(f"--overwrite would replace {self.root / clash[0]}, which the old run did not write; "
                              f"move it elsewhere first, or choose another --run-dir")
        if self.protect is not None:
            protected = self.protect.resolve()
            for name in self.old:
                if (self.root / name).resolve() == protected:
                    raise ConfigError(f"--overwrite would delete {self.protect}, the teacher this run reads; copy it "
                                      f"elsewhere first or choose another --run-dir")

    def inside(self, path: Path) -> str | None:
        try:
            return str(Path(path).absolute().relative_to(self.path.absolute()))
        except ValueError:
            return None  # written elsewhere (train-teacher --out): not the run directory's to remove

    def record(self, *paths: Path) -> None:
        """Note files the run wrote, in the manifest of the run directory."""
        self.written |= {name for name in map(self.inside, paths) if name is not None}
        if not self.staging:
            self.write_manifest()

    def forget(self, *paths: Path) -> None:
        self.written -= {name for name in map(self.inside, paths) if name is not None}
        if not self.staging:
            self.write_manifest()

    def write_manifest(self) -> None:
        current = self.written | (self.old if self.path == self.root and self.old is not None else set())
        existing = sorted(name for name in current if (self.root / name).exists())
        write_text(self.root / MANIFEST, json.dumps({"files": existing}, indent=1) + "\n")

    @property
    def staging(self) -> bool:
        return self.path != self.root

    def swap(self) -> None:
        """The new run has saved a checkpoint: delete the old run's files, move the new ones in."""
        if not self.staging:
            return
        debris = checkpoint.unfinished_writes(self.root)  # temporary files of checkpoint writes a killed run left
        for target in [self.root / name for name in self.old or ()] + debris:
            if target.is_file() or target.is_symlink():  # unlink never follows a link
                target.unlink()
        checkpoints = self.root / "checkpoints"
        if checkpoints.is_dir() and not checkpoints.is_symlink() and not any(checkpoints.iterdir()):
            checkpoints.rmdir()
        for entry in sorted(self.path.iterdir()):
            destination = self.root / entry.name
            if entry.is_dir() and destination.is_dir():  # checkpoints/ kept for files of the user's
                for inner in entry.iterdir():
                    inner.rename(destination / inner.name)
                entry.rmdir()
            else:
                entry.rename(destination)
        self.path.rmdir()
        self.path, self.old = self.root, None
        self.write_manifest()

    def close(self, succeeded: bool) -> None:
        """End of the run: a staging folder that never swapped is removed (the old run stays)."""
        try:
            if self.staging and not succeeded:
                shutil.rmtree(self.path, ignore_errors=True)
        finally:
            self.unlock()
