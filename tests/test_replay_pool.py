"""The replay pool: what it keeps once full (the latest samples, or a uniform sample of all of them),
and that a pool restored from its state goes on exactly as the original would."""
from __future__ import annotations

import torch

from datafree.synthetic import ReplayPool, last_write_wins


def numbered(start: int, stop: int) -> torch.Tensor:
    """Samples that carry their own number i as (i // 100, i % 100): exact in the pool's fp16."""
    i = torch.arange(start, stop)
    return torch.stack([i // 100, i % 100], dim=1).float()


def held_numbers(pool: ReplayPool) -> torch.Tensor:
    held = pool.samples[: len(pool)].float()
    return (held[:, 0] * 100 + held[:, 1]).long()


def fill(pool: ReplayPool, total: int, batch: int = 64) -> None:
    for start in range(0, total, batch):
        pool.add(numbered(start, min(total, start + batch)))


def test_a_ring_pool_keeps_the_latest_samples():
    pool = ReplayPool(max_samples=1000, max_bytes=1e9, policy="ring")
    fill(pool, 10_000)
    assert len(pool) == 1000 and pool.count == 10_000
    assert sorted(held_numbers(pool).tolist()) == list(range(9000, 10_000))


def test_a_reservoir_pool_keeps_a_uniform_sample_of_every_sample_added():
    pool = ReplayPool(max_samples=1000, max_bytes=1e9, policy="reservoir")
    fill(pool, 10_000)
    numbers = held_numbers(pool)
    assert len(pool) == 1000 and len(numbers.unique()) == 1000  # no sample held twice
    # each tenth of the run holds ~100 of the 1,000 slots (binomial std ~9.5; a ring would give 0 … 1,000)
    per_tenth = torch.bincount(numbers // 1000, minlength=10)
    assert per_tenth.min() >= 60 and per_tenth.max() <= 140, per_tenth.tolist()


def test_both_pools_hold_every_sample_until_full_and_never_exceed_the_byte_budget():
    for policy in ("ring", "reservoir"):
        pool = ReplayPool(max_samples=10_000, max_bytes=800 * 2 * 2, policy=policy)  # 800 samples of 2 fp16 values
        fill(pool, 700)
        assert held_numbers(pool).tolist() == list(range(700))
        fill(pool, 3000)
        assert len(pool) == pool.capacity == 800 and len(pool.samples) == 800


def test_a_restored_reservoir_pool_continues_exactly_as_the_original():
    original = ReplayPool(max_samples=500, max_bytes=1e9)
    fill(original, 2000)
    restored = ReplayPool(max_samples=500, max_bytes=1e9)
    restored.load_state_dict(original.state_dict(), torch.device("cpu"))
    for pool in (original, restored):
        torch.manual_seed(7)
        for start in range(2000, 4000, 64):
            pool.add(numbered(start, start + 64))
    assert torch.equal(original.samples, restored.samples) and original.count == restored.count == 4048


def test_of_several_writes_to_one_slot_the_last_lands():
    slot, x = last_write_wins(torch.tensor([3, 1, 3, 0, 1]), torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0]))
    assert dict(zip(slot.tolist(), x.tolist())) == {0: 13.0, 1: 14.0, 3: 12.0}
