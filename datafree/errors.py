"""Errors that mean "the user's input is wrong": the CLI prints them as one line and exits 2."""
from __future__ import annotations

from pathlib import Path


class DatafreeError(Exception):
    """Bad input, with a message that names the problem and the fix."""


class ConfigError(DatafreeError):
    """A config key, value or name that cannot be used."""


class CheckpointError(DatafreeError):
    """A checkpoint file that is missing, unreadable, unsafe or of the wrong kind."""


class DivergenceError(DatafreeError):
    """A loss became NaN or Inf; the run stopped and kept its last good checkpoint."""


class Interrupted(DatafreeError):
    """SIGINT/SIGTERM: the run finished its step, saved a checkpoint at `step` and stopped; the
    message says how to resume it."""

    def __init__(self, step: int, path: "Path | None", command: str = "distill") -> None:
        self.step, self.path, self.command = step, path, command
        self.run_dir = path.parent.parent if path is not None else None
        if path is None:
            super().__init__(f"stopped at step {step}; no checkpoint was saved (no run directory)")
        else:
            super().__init__(f"stopped at step {step}; checkpoint saved to {path}. Resume with: datafree {command} "
                             f"--resume {self.run_dir} (Python: datafree.resume({str(self.run_dir)!r}))")
