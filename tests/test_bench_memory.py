"""The bench's per-run memory figures: the peak is the run's, not the process's lifetime peak."""
import sys

import pytest
import torch

from datafree.bench.memory import peak_memory_mb, release_memory, reset_peak_memory

linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self is Linux's")


@linux
def test_peak_counts_what_a_run_allocates_and_starts_afresh():
    reset_peak_memory()
    before = peak_memory_mb()
    block = torch.ones(64 * 2**20)  # 64 Mi float32 = 256 MiB, written to, so resident
    during = peak_memory_mb()
    del block
    release_memory()
    reset_peak_memory()
    after = peak_memory_mb()
    assert during - before > 200, (before, during)
    assert after < during - 200, (during, after)  # the reset forgets the earlier peak
