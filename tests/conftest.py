"""Shared fixtures: a small digits teacher trained once per test session (a few seconds)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import datafree

# Two cores. Under pytest-xdist (two workers) each worker and the processes its tests start get one
# thread, so the workers do not oversubscribe the cores; in one process, two threads.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
elif "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _seeded_torch() -> None:
    """Every test starts from the same random state, so none passes or fails by the order tests ran in."""
    torch.manual_seed(0)


FAST = {"trainer.batch_size": 64, "trainer.log_every": 5, "trainer.eval_every": 0, "trainer.image_every": 0}


@pytest.fixture(scope="session")
def digits_teacher(tmp_path_factory) -> Path:
    """A digits_cnn teacher (width 8) trained for 150 steps: ~95% test accuracy, enough to distill from."""
    root = tmp_path_factory.mktemp("teacher")
    result = datafree.train_teacher("digits_cnn", "digits", steps=150, run_dir=root / "run", output=root / "teacher.pt",
                                    overrides={**FAST, "teacher.args": {"width": 8}}, quiet=True)
    return result.checkpoint
