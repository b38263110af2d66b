"""Garbage in place of a checkpoint: random bytes, truncations and byte flips of a valid file.

Fair expectation for each damaged file: `load_model` raises CheckpointError (never any other
exception), or, when the damage hit only bytes that carry no content (zip bookkeeping such as
timestamps or alignment padding), it returns exactly what was saved. Silently loading different
weights is never acceptable: torch.load does not check the zip CRCs, so every checkpoint carries
a digest of its contents that catches flips in the weights. Seeded, so every run tries the same files.
"""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from datafree import checkpoint, cli
from datafree.data import load_dataset
from datafree.errors import CheckpointError
from datafree.models import create_model


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A small model checkpoint and what loading it gives."""
    info = load_dataset("digits").info
    model = create_model("digits_cnn", 10, info.input_shape, width=4)
    path = checkpoint.save_model(model, info, tmp_path_factory.mktemp("fuzz") / "good.pt",
                                 {"name": "digits_cnn", "args": {"width": 4}}, {"test_accuracy": 50.0})
    return path.read_bytes(), checkpoint.load_model(path)


def outcome(data: bytes, path, original) -> str:
    """'refused' (CheckpointError) or 'intact' (loaded, identical to the original); anything else fails."""
    path.write_bytes(data)
    try:
        loaded = checkpoint.load_model(path)
    except CheckpointError as e:
        assert "\n" not in str(e)
        return "refused"
    want = original.model.state_dict()
    got = loaded.model.state_dict()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), "different weights loaded"
    assert (loaded.arch, loaded.info, loaded.metrics) == (original.arch, original.info, original.metrics)
    return "intact"


def random_bytes(rng: random.Random, good: bytes) -> bytes:
    """Noise, sometimes behind a zip or pickle header so that it gets past the first checks."""
    noise = rng.randbytes(rng.choice([0, 1, 7, 64, 1000, 5000]))
    prefix = rng.choice([b"", b"PK\x03\x04", b"\x80\x02", good[:64], good[:200]])
    return prefix + noise


def flipped(rng: random.Random, good: bytes, flips: int) -> bytes:
    data = bytearray(good)
    for _ in range(flips):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return bytes(data)


def burst(rng: random.Random, good: bytes) -> bytes:
    """A short run of random bytes written over the file (a bad sector, a torn write)."""
    start, length = rng.randrange(len(good)), rng.randrange(1, 33)
    return good[:start] + rng.randbytes(length) + good[start + length:]


def test_damaged_checkpoints_are_refused_or_load_unchanged(original, tmp_path):
    good, loaded = original
    rng = random.Random(20240601)
    path = tmp_path / "damaged.pt"
    results: dict[str, Counter] = {}
    cases = ([("random bytes", random_bytes(rng, good)) for _ in range(60)]
             + [("truncated", good[: n]) for n in [0, 1, 21, len(good) - 1, len(good) - 22]]
             + [("truncated", good[: rng.randrange(len(good))]) for _ in range(40)]
             + [("one bit flipped", flipped(rng, good, 1)) for _ in range(250)]
             + [("several bytes flipped", flipped(rng, good, rng.randrange(2, 10))) for _ in range(60)]
             + [("burst", burst(rng, good)) for _ in range(60)]
             + [("appended", good + rng.randbytes(rng.randrange(1, 100))) for _ in range(10)])
    for kind, data in cases:
        results.setdefault(kind, Counter())[outcome(data, path, loaded)] += 1
    # Not vacuous: each kind of damage was caught, and a flip anywhere in the weights was among them.
    for kind in ("random bytes", "truncated", "one bit flipped", "several bytes flipped", "burst"):
        assert results[kind]["refused"] > 0, results
    assert results["random bytes"]["intact"] == 0 and results["truncated"]["intact"] == 0, results
    # Most of the file is weights, so most single flips must be refused (without the digest most load).
    assert results["one bit flipped"]["refused"] > 0.5 * sum(results["one bit flipped"].values()), results


def test_a_flip_in_the_weights_is_always_refused(original, tmp_path):
    good, loaded = original
    rng = random.Random(7)
    weights = max(loaded.model.state_dict().values(), key=lambda t: t.numel()).numpy().tobytes()
    start = good.find(weights)
    assert start > 0
    path = tmp_path / "damaged.pt"
    for _ in range(30):
        data = bytearray(good)
        data[start + rng.randrange(len(weights))] ^= 1 << rng.randrange(8)
        assert outcome(bytes(data), path, loaded) == "refused"


def test_run_checkpoints_too(tmp_path):
    state = {"step": 7, "models": {"student": {"w": torch.randn(50, 50)}},
             "rng": [{"python": (3, tuple(range(10)), None)}]}
    path = checkpoint.save_run(state, tmp_path, 7, keep=1)
    good = path.read_bytes()
    rng = random.Random(3)
    refused = 0
    for _ in range(80):
        path.write_bytes(flipped(rng, good, 1))
        try:
            again = checkpoint.load_latest_run(tmp_path)
        except CheckpointError:
            refused += 1
            continue
        assert again["step"] == 7 and torch.equal(again["models"]["student"]["w"], state["models"]["student"]["w"])
        assert again["rng"] == [{"python": (3, tuple(range(10)), None)}]
    assert refused > 40


def test_the_cli_exits_2_on_each_damaged_file(original, tmp_path, capsys):
    good, loaded = original
    rng = random.Random(11)
    path = tmp_path / "damaged.pt"
    for data in [random_bytes(rng, good), good[: len(good) // 3], flipped(rng, good, 3), b"", burst(rng, good)]:
        if outcome(data, path, loaded) == "intact":
            continue
        assert cli.main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"datafree: error: {path}") and err.count("\n") == 1
