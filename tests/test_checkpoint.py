import os

import pytest
import torch

from datafree import checkpoint
from datafree.data import load_dataset
from datafree.errors import CheckpointError
from datafree.models import create_model


@pytest.fixture()
def saved(tmp_path):
    info = load_dataset("digits").info
    model = create_model("digits_cnn", 10, info.input_shape, width=8)
    with torch.no_grad():  # non-trivial BatchNorm statistics must survive the round trip too
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    path = checkpoint.save_model(model, info, tmp_path / "m.pt", {"name": "digits_cnn", "args": {"width": 8}},
                                 {"test_accuracy": 12.5})
    return model, info, path


def test_saved_model_reloads_to_identical_predictions(saved):
    model, info, path = saved
    loaded = checkpoint.load_model(path)
    x = torch.randn(16, *info.input_shape)
    model.eval(), loaded.model.eval()
    assert torch.equal(model(x), loaded.model(x))
    assert loaded.info == info and loaded.metrics == {"test_accuracy": 12.5}
    assert loaded.arch == {"name": "digits_cnn", "args": {"width": 8}}


def test_custom_module_weights_load_into_a_given_module(tmp_path):
    info = load_dataset("wine").info
    net = torch.nn.Sequential(torch.nn.Linear(13, 3))
    path = checkpoint.save_model(net, info, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="custom model; pass the nn.Module"):
        checkpoint.load_model(path)
    other = torch.nn.Sequential(torch.nn.Linear(13, 3))
    checkpoint.load_model(path, other)
    assert torch.equal(other[0].weight, net[0].weight)


def test_a_pickled_module_is_refused_without_running_it(tmp_path):
    path = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(CheckpointError, match="contains pickled Python objects .* refuses to unpickle"):
        checkpoint.load_model(path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": checkpoint.MODEL_FORMAT, "x": Payload()}, path)
    with pytest.raises(CheckpointError):
        checkpoint.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a readable checkpoint"),
    (b"definitely not a checkpoint", "not a readable checkpoint"),
])
def test_garbage_files_give_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        checkpoint.load_model(path)


def test_truncated_checkpoint(saved, tmp_path):
    _, _, path = saved
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        checkpoint.load_model(cut)


def test_missing_bare_and_wrong_kind(tmp_path, saved):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        checkpoint.load_model(tmp_path / "nothing.pt")
    with pytest.raises(CheckpointError, match="not a file"):
        checkpoint.load_model(tmp_path)
    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "sd.pt")
    with pytest.raises(CheckpointError, match="not a datafree checkpoint .*bare state_dict"):
        checkpoint.load_model(tmp_path / "sd.pt")
    _, _, path = saved
    with pytest.raises(CheckpointError, match="is a model checkpoint, but a run checkpoint"):
        checkpoint.safe_load(path, checkpoint.RUN_FORMAT)


def test_weights_that_do_not_fit(tmp_path, saved):
    _, info, path = saved
    obj = torch.load(path, weights_only=True)
    obj["arch"]["args"]["width"] = 16
    del obj["digest"]  # a hand-made file: edited contents no longer match the digest (see test_checkpoint_fuzz.py)
    torch.save(obj, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="weights do not fit that model"):
        checkpoint.load_model(tmp_path / "wrong.pt")


def test_atomic_save_leaves_no_temporary_file_and_replaces_whole(tmp_path):
    path = tmp_path / "a.pt"
    checkpoint.atomic_save({"v": torch.zeros(3)}, path)
    checkpoint.atomic_save({"v": torch.ones(3)}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["a.pt"]
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.ones(3))


def test_run_checkpoints_keep_the_last_k(tmp_path):
    for step in (10, 20, 30, 40):
        checkpoint.save_run({"step": step}, tmp_path, step, keep=2)
    assert [p.name for p in checkpoint.list_run_checkpoints(tmp_path)] == ["step_00000030.pt", "step_00000040.pt"]
    assert checkpoint.load_latest_run(tmp_path)["step"] == 40
    with pytest.raises(CheckpointError, match="nothing to resume"):
        checkpoint.load_latest_run(tmp_path / "elsewhere")


def test_a_run_checkpoint_holds_the_replay_pool_at_its_compact_size(digits_teacher, tmp_path):
    """The pool is stored in fp16 and saved without the storage of its unused capacity: a run
    checkpoint is at most twice weights + optimizer state + the pool's filled part."""
    import datafree

    datafree.distill(digits_teacher, "digits_cnn_half", "ours", steps=3, run_dir=tmp_path / "run", quiet=True,
                              overrides={"trainer.eval_every": 0, "generator.replay_size": 1_000_000})
    path = checkpoint.list_run_checkpoints(tmp_path / "run")[-1]
    state = checkpoint.safe_load(path, checkpoint.RUN_FORMAT)
    held = state["replay"][0]["samples"]
    # 64 fresh samples for the first student update (an empty pool has nothing to replay), then 32 per update
    assert held.dtype == torch.float16 and len(held) == 64 + (3 * 5 - 1) * 32
    nbytes = lambda obj: sum(t.numel() * t.element_size() for t in tensors_in(obj))  # noqa: E731
    essential = nbytes(state["models"]) + nbytes(state["players"]) + held.numel() * held.element_size()
    assert path.stat().st_size <= 2 * essential, (path.stat().st_size, essential)


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from tensors_in(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from tensors_in(v)
