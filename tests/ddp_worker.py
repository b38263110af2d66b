"""One rank of a distributed run, for tests/test_distributed.py.

Launched as `python -m torch.distributed.run --nproc_per_node 2 tests/ddp_worker.py JOBS.json`.
Each job is a `datafree` command line, run through the real CLI (`datafree.cli.main`), exactly
what `torchrun -m datafree distill ...` runs. The only addition is a test hook: the trainer
class is replaced by a subclass that remembers itself, so that after each job this rank can save
its *own* networks, last local (unreduced) losses and the files it wrote to `<out>/rank<R>.pt`
for the test to compare across ranks. A job may also ask for a SIGTERM to this process on one
rank at one step, to check that a stop seen by one rank stops all of them at the same step.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

import datafree.api
import datafree.checkpoint
import datafree.files
from datafree import cli

trainers: list[datafree.api.Trainer] = []
stop_request: dict = {}  # {"rank": r, "step": s}: SIGTERM to this process then
writes: list[str] = []  # files this rank wrote (checkpoints, models, config.toml, metrics.json, the manifest)
original_atomic_write = datafree.files.atomic_write


def recording_atomic_write(path, write):
    """Every file datafree writes goes through files.atomic_write: note its path in `writes`."""
    writes.append(str(path))
    return original_atomic_write(path, write)


class RecordingTrainer(datafree.api.Trainer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.local_losses: dict[str, float] = {}
        trainers.append(self)
        log = self.reporter.log

        def recording_log(samples_per_s: float) -> None:  # this rank's own losses, before averaging
            sums, counts = self.reporter.sums, self.reporter.counts
            self.local_losses = {k: float(sums[k] / counts[k]) for k in sums}
            log(samples_per_s)

        self.reporter.log = recording_log

    def update(self, player) -> dict[str, torch.Tensor]:
        if stop_request and (self.dist.rank, self.step) == (stop_request["rank"], stop_request["step"]):
            stop_request.clear()
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the trainer: finish the step, save, stop
        return super().update(player)


def main() -> None:
    datafree.api.Trainer = RecordingTrainer  # api.run looks the class up at call time
    datafree.files.atomic_write = datafree.checkpoint.atomic_write = recording_atomic_write
    for job in json.loads(Path(sys.argv[1]).read_text()):
        trainers.clear()
        writes.clear()
        stop_request.clear()
        stop_request.update(job.get("stop", {}))
        code = cli.main(job["argv"])
        trainer = trainers[0]
        networks = {"student": trainer.student, "generator": trainer.generator, "discriminator": trainer.discriminator}
        state = {"exit_code": code, "step": trainer.step, "local_losses": trainer.local_losses, "writes": list(writes),
                 "models": {name: {k: v.detach().clone() for k, v in net.state_dict().items()}
                            for name, net in networks.items() if net is not None}}
        out = Path(job["out"])
        out.mkdir(parents=True, exist_ok=True)
        torch.save(state, out / f"rank{trainer.dist.rank}.pt")


if __name__ == "__main__":
    main()
