"""Where a run reports: TensorBoard scalars, histograms, images and hparams under the run
directory; a tqdm progress bar with live figures (hidden when stderr is not a terminal, as in
CI); and console messages. Only the main process (rank 0) writes anything.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm


class Monitor:
    def __init__(self, run_dir: Path | None, total_steps: int, description: str, console: bool = True,
                 start_step: int = 0) -> None:
        """TensorBoard files go to `run_dir` (None: none written); `console` shows the bar and messages."""
        self.console = console
        self.writer = None
        if run_dir is not None:
            # A resumed run drops what the stopped one logged after its last checkpoint (no double curves).
            self.writer = SummaryWriter(str(run_dir), purge_step=start_step + 1 if start_step else None)
        self.bar = tqdm(total=total_steps, initial=start_step, desc=description, dynamic_ncols=True,
                        disable=True if not console else None, leave=False, file=sys.stderr)

    def relocate(self, move: Callable[[], Path]) -> None:
        """Close the event file, let `move()` move it (it returns the new folder), and log on there.
        (TensorBoard's writer reopens its file by name for every write, so it cannot follow a move.)"""
        if self.writer is None:
            move()
            return
        self.writer.close()
        self.writer = SummaryWriter(str(move()))

    def files(self) -> list[Path]:
        """The event files this monitor writes (for the run directory's record)."""
        if not self.writer:
            return []
        return [Path(self.writer.file_writer.event_writer._file_name)]

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def histogram(self, step: int, tag: str, values: torch.Tensor, bins: Any = "auto") -> None:
        if self.writer:
            self.writer.add_histogram(tag, values.detach().float().cpu(), step, bins=bins)

    def image(self, step: int, tag: str, grid: torch.Tensor) -> None:
        if self.writer:
            self.writer.add_image(tag, grid.detach().float().cpu().clamp(0, 1), step)

    def text(self, step: int, tag: str, text: str) -> None:
        if self.writer:
            self.writer.add_text(tag, text, step)

    def message(self, text: str) -> None:
        """A line on the console that does not break the progress bar."""
        if self.console:
            self.bar.write(text, file=sys.stderr)

    def progress(self, step: int, figures: dict[str, str]) -> None:
        if self.console:
            self.bar.n = step
            self.bar.set_postfix(figures, refresh=True)

    def hparams(self, hparams: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record the run's settings and final figures in this run's own event file, so runs
        line up side by side in TensorBoard's HPARAMS tab."""
        if self.writer:
            from torch.utils.tensorboard.summary import hparams as hparams_summary

            clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
            for summary in hparams_summary(clean, metrics):
                self.writer.file_writer.add_summary(summary)
            for tag, value in metrics.items():
                self.writer.add_scalar(tag, value)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()
