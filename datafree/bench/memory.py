"""The bench process's memory: each run's peak resident memory, and what a finished run's tensors
used handed back before the next run starts (runs follow one another in one process)."""
from __future__ import annotations

import ctypes
import gc
from pathlib import Path


def release_memory() -> None:
    """Give what a finished run's tensors used back to the system. Nothing of a run stays alive after
    it (no trainer, no tensor), but glibc keeps freed heap memory for reuse: on the rgb32 pair the
    process stayed ~300 MB larger after each run without this trim than with it."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def reset_peak_memory() -> None:
    """Start this process's peak resident memory afresh (Linux: /proc/self/clear_refs), so that the
    peak read after a run is that run's, memory the process already held included."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process since the last reset, in MiB (None where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
