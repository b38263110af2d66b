import pickle

import numpy as np
import pytest
import torch

from datafree.data import BatchStream, Split, augment_batch, eval_batches, load_dataset, stratified_split
from datafree.errors import ConfigError
from datafree.spec import InputSpec


def test_digits_has_the_documented_fixed_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert (len(a.train), len(a.test)) == (1347, 450)
    assert a.info.input_shape == (1, 8, 8) and a.info.num_classes == 10
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    counts = torch.bincount(a.test.y, minlength=10)
    assert counts.min() >= 44 and counts.max() <= 46  # stratified: a quarter of each class
    assert 0.0 <= float(a.train.x.min()) and float(a.train.x.max()) <= 1.0


def test_split_is_disjoint_and_complete():
    y = np.repeat(np.arange(3), [10, 20, 30])
    train, test = stratified_split(y, 0.25)
    assert len(set(train) & set(test)) == 0 and len(train) + len(test) == 60
    assert list(np.bincount(y[test])) == [2, 5, 8]


def test_feature_vector_data_set():
    ds = load_dataset("breast_cancer")
    assert ds.info.input_shape == (30,) and ds.info.num_classes == 2 and not ds.info.is_image
    x = ds.info.normalize(ds.train.x)
    assert torch.allclose(x.mean(0), torch.zeros(30), atol=1e-4)


def test_normalize_round_trip():
    info = InputSpec((3, 4, 4), 10, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7), name="t")
    x = torch.rand(5, 3, 4, 4)
    assert torch.allclose(info.denormalize(info.normalize(x)), x, atol=1e-6)
    assert InputSpec.from_dict(info.to_dict()) == info


def test_batch_stream_is_deterministic_and_resumable():
    ds = load_dataset("digits")
    a = BatchStream(ds.train, ds.info, 64, torch.device("cpu"), seed=3, augment=False)
    batches = [next(a)[1] for _ in range(30)]  # crosses an epoch boundary (21 batches per epoch)
    b = BatchStream(ds.train, ds.info, 64, torch.device("cpu"), seed=3, augment=False)
    b.position = 17
    assert all(torch.equal(next(b)[1], batches[i]) for i in range(17, 30))
    epoch0 = torch.cat(batches[:21])
    assert len(set(epoch0.tolist())) == 10 and not torch.equal(batches[0], batches[21])


def test_batch_stream_shards_ranks_disjointly():
    ds = load_dataset("digits")
    idx = torch.arange(len(ds.train))
    split = Split(idx.float().view(-1, 1), idx)
    info = InputSpec((1,), 10, (0.0,), (1.0,), name="ids")
    r0 = BatchStream(split, info, 32, torch.device("cpu"), seed=0, augment=False, rank=0, world_size=2)
    r1 = BatchStream(split, info, 32, torch.device("cpu"), seed=0, augment=False, rank=1, world_size=2)
    seen0, seen1 = next(r0)[1], next(r1)[1]
    assert len(set(seen0.tolist()) & set(seen1.tolist())) == 0


def test_batch_larger_than_the_data_is_a_clear_error():
    ds = load_dataset("wine")
    with pytest.raises(ConfigError, match="lower trainer.batch_size"):
        BatchStream(ds.train, ds.info, 512, torch.device("cpu"), seed=0)


def test_eval_batches_cover_the_test_set_once():
    ds = load_dataset("digits")
    ys = torch.cat([y for _, y in eval_batches(ds.test, ds.info, 100, torch.device("cpu"))])
    assert torch.equal(ys, ds.test.y)


def test_shift_augmentation_moves_content_and_keeps_shape():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1
    out = augment_batch(x, "shift1")
    assert out.shape == x.shape
    assert torch.allclose(out.sum((1, 2, 3)), x.sum((1, 2, 3)))  # a 1-px shift keeps the centred blob
    assert not torch.equal(out, x)
    flipped = augment_batch(torch.arange(16.0).view(1, 1, 4, 4).repeat(200, 1, 1, 1), "shift0-flip")
    assert 40 < int((flipped[:, 0, 0, 0] == 3).sum()) < 160


def test_missing_data_root_names_the_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"data root .* does not exist; pass --data-root .* or add --download"):
        load_dataset("cifar10", tmp_path / "missing")
    with pytest.raises(ConfigError, match="files not found"):
        load_dataset("cifar10", tmp_path)


def test_missing_image_folder_does_not_suggest_download(tmp_path):
    with pytest.raises(ConfigError, match=r"data root .* does not exist") as error:
        load_dataset("imagefolder", tmp_path / "missing")
    assert "--download" not in str(error.value)


def test_cifar_download_fills_an_existing_but_empty_folder(tmp_path, monkeypatch):
    import torchvision

    (tmp_path / "cifar-10-batches-py").mkdir()
    fetched = []

    def fake_cifar10(root, download):
        fetched.append(download)
        (tmp_path / "cifar-10-batches-py").rmdir()
        write_cifar(tmp_path)

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake_cifar10)
    ds = load_dataset("cifar10", tmp_path, download=True)
    assert fetched == [True] and len(ds.test) == 20
    load_dataset("cifar10", tmp_path, download=True)  # complete now: nothing fetched again
    assert fetched == [True]


def write_cifar(root, name="cifar-10-batches-py", n=20):
    folder = root / name
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(folder / file, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         "labels": rng.integers(0, 10, n).tolist()}, f)


def test_cifar_files_are_read_without_torchvision(tmp_path):
    write_cifar(tmp_path)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.train.x.shape == (100, 3, 32, 32) and ds.train.x.dtype == torch.uint8
    assert len(ds.test) == 20 and ds.info.augment == "shift4-flip"


def test_cifar_reader_refuses_pickles_that_run_code(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(pickle.UnpicklingError, match="not allowed"):
        load_dataset("cifar10", tmp_path)


def test_image_folder(tmp_path):
    from PIL import Image

    for part in ("train", "test"):
        for cls in ("cat", "dog"):
            (tmp_path / part / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("L" if cls == "cat" else "RGB", (20, 12),
                          color=40 * i).save(tmp_path / part / cls / f"{i}.png")
    ds = load_dataset("imagefolder", tmp_path, image_size=16)
    assert ds.train.x.shape == (6, 3, 16, 16) and ds.info.num_classes == 2
    with pytest.raises(ConfigError, match="has no test/ subfolder"):
        (tmp_path / "test").rename(tmp_path / "val")
        load_dataset("imagefolder", tmp_path)
