"""Writing files so that a crash, a full disk or a planted symbolic link can do no harm.

Every run file datafree writes (configs, metrics, checkpoints, models, exports) goes through
`atomic_write`; TensorBoard's event files, appended to as a run goes, are opened by TensorBoard in a
run directory already checked to hold no links. In `atomic_write` the content goes to a new temporary file
in the destination's own folder, created with a random name and `O_EXCL | O_NOFOLLOW` (so an
existing file or link of any name is never opened), is flushed and fsynced, and is renamed over
the destination. A rename replaces a symbolic link at the destination rather than writing
through it, so no write ever lands outside the folder it names. A failed write leaves the old file
and no debris.
"""
from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from datafree.errors import DatafreeError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class WriteError(DatafreeError):
    """A file could not be written (full disk, read-only or missing folder, no permission)."""


def write_failure(path: Path, e: BaseException) -> WriteError:
    """A one-line explanation of a failed write, with the fix that fits its cause."""
    code = getattr(e, "errno", None)
    text = str(e)
    if code in DISK_FULL or "No space left" in text or "file write failed" in text or "inline_container" in text:
        return WriteError(f"could not write {path}: the disk is full; free some space (or lower "
                          f"generator.replay_mb / trainer.keep_checkpoints) and resume")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return WriteError(f"could not write {path}: {os.strerror(code)}; choose a folder you can write to (--run-dir)")
    if code == errno.ENOENT:
        return WriteError(f"could not write {path}: its folder does not exist")
    if code == errno.ENOTDIR:
        return WriteError(f"could not write {path}: part of that path is a file, not a folder; choose another path")
    reason = os.strerror(code) if code else text.splitlines()[0][:160] if text else type(e).__name__
    return WriteError(f"could not write {path}: {reason}")


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` whole or not at all, never through a link: `write(f)` fills a temporary file."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise write_failure(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # a failed write (disk full, Ctrl-C) leaves neither a partial file nor debris
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, (OSError, RuntimeError)) and not isinstance(e, DatafreeError):
            raise write_failure(path, e) from None
        raise
    sync_folder(path.parent)
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def sync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a folder; the rename itself has happened
    finally:
        os.close(fd)
