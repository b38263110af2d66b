"""Every config under experiments/configs loads and validates; the CIFAR ones state the published
budgets and run a few steps on a tiny CIFAR-format data set written to a temporary folder."""
from __future__ import annotations

import pickle
from functools import lru_cache
from math import ceil
from pathlib import Path

import numpy as np
import pytest

import datafree
from datafree import api
from datafree.bench import load_suite
from datafree.config import load
from datafree.data import load_dataset
from datafree.methods import METHODS
from datafree.models import create_model
from datafree.monitor import Monitor
from datafree.trainer import Trainer

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
CONFIGS = sorted((EXPERIMENTS / "configs").rglob("*.toml"))
TEACHER_CONFIGS = [p for p in CONFIGS if p.name.startswith("teacher")]
DISTILL_CONFIGS = [p for p in CONFIGS if not p.name.startswith("teacher")]
CIFAR_DISTILL = [p for p in DISTILL_CONFIGS if p.parts[-3] in ("cifar10", "cifar100")]
PROTOCOL_UPDATES = 200 * 400  # CMI/Fast: 200 epochs × 400 student steps
DFAD_UPDATES = 500 * 50 * 5  # DFAD_cifar.py: 500 epochs × 50 iterations × 5 student steps
# Methods whose reference code states its own budget: student updates and batch size.
REFERENCE_BUDGETS = {"dfad": (DFAD_UPDATES, 256), "zskt": (PROTOCOL_UPDATES, 128),
                     "fast": (220 * 400, 256),  # Fast's scripts: 220 epochs
                     "nayer": (120 * 400, 512)}  # NAYER's scripts: 120 epochs at batch 512


def name(path: Path) -> str:
    return str(path.relative_to(EXPERIMENTS / "configs"))


@lru_cache(maxsize=None)
def teachers_written_under(folder: Path) -> dict:
    """teacher.checkpoint → config, for the teacher configs of one data set's folder."""
    return {cfg.teacher.checkpoint: cfg for cfg in (load(t) for t in sorted(folder.glob("teacher*.toml")))}


def dataset_folder(path: Path) -> Path:
    """experiments/configs/<data set>/ of a config (teacher configs sit in it, pair configs below it)."""
    return path.parent if any(path.parent.glob("teacher*.toml")) else path.parent.parent


def test_there_are_configs_for_every_issue_setting():
    names = {name(p) for p in CONFIGS}
    digits_methods = {"scratch", "kd", "gankd", "dfad", "zskt", "dafl", "deepinv", "dfq", "ours", "gankd_datafree"}
    assert {f"digits/{m}.toml" for m in digits_methods} <= names
    assert "digits/teacher.toml" in names and "digits/tiny/ours.toml" in names
    for dataset in ("cifar10", "cifar100"):
        for teacher in ("resnet34", "vgg11_bn", "wrn40_2"):
            assert f"{dataset}/teacher_{teacher}.toml" in names
        for pair in ("resnet34-resnet18", "vgg11_bn-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn40_1", "wrn40_2-wrn16_2"):
            assert {f"{dataset}/{pair}/{m}.toml" for m in ("dafl", "zskt", "deepinv", "dfq")} <= names


@pytest.mark.parametrize("path", TEACHER_CONFIGS, ids=name)
def test_teacher_configs_validate_and_say_where_the_teacher_goes(path):
    cfg = load(path)
    assert cfg.method.name == "scratch"
    assert cfg.teacher.checkpoint.startswith("checkpoints/teachers/") and cfg.teacher.checkpoint.endswith(".pt")
    if cfg.data.name.startswith("cifar"):  # 200 epochs at the config's batch size
        assert cfg.trainer.steps == 200 * ceil(50000 / cfg.trainer.batch_size)
        assert cfg.published.accuracy > 0 and cfg.published.source
        assert cfg.trainer.checkpoint_every > 0  # a run of hours must be resumable


@pytest.mark.parametrize("path", DISTILL_CONFIGS, ids=name)
def test_distill_configs_validate_and_read_a_teacher_some_config_trains(path):
    cfg = load(path)
    assert cfg.method.name == path.stem  # the file name says which method it runs
    produced = teachers_written_under(dataset_folder(path))
    assert cfg.teacher.checkpoint in produced, f"no teacher config writes {cfg.teacher.checkpoint}"
    teacher_cfg = produced[cfg.teacher.checkpoint]
    assert (teacher_cfg.data.name, teacher_cfg.teacher.name) == (cfg.data.name, cfg.teacher.name)
    if cfg.published.accuracy:
        assert cfg.published.source and cfg.published.teacher_accuracy > 0
    else:
        assert cfg.published.teacher_accuracy == 0  # no half-stated published figure


@pytest.mark.parametrize("path", CIFAR_DISTILL, ids=name)
def test_cifar_budgets_are_the_published_ones(path):
    cfg = load(path)
    tc = cfg.trainer
    if METHODS.get(cfg.method.name).data == "real":
        assert tc.steps == 200 * ceil(50000 / tc.batch_size)  # 200 epochs, as the teachers
    else:
        updates, batch_size = REFERENCE_BUDGETS.get(cfg.method.name, (PROTOCOL_UPDATES, 256))
        assert (tc.steps * tc.s_steps, tc.batch_size) == (updates, batch_size)
    assert 0 < tc.checkpoint_every <= tc.steps // 10  # long runs resume from a recent checkpoint


def test_every_suite_loads_with_all_its_configs():
    for suite in sorted((EXPERIMENTS / "suites").glob("*.toml")):
        spec = load_suite(suite)
        assert spec.runs and spec.teachers
    assert len(load_suite("digits").runs) == 12 * 3  # every method but gankd_datafree, 3 seeds
    assert len(load_suite("digits_gap").runs) == 8 * 3
    assert len(load_suite("digits_gankd").runs) == (3 + 2 + 1 + 1) * 3


# ---------------------------------------------------------------------------------------------
# A few steps of every CIFAR config on tiny random data in the CIFAR file format


def write_tiny_cifar(root: Path, n: int = 8) -> None:
    rng = np.random.default_rng(0)

    def dump(path: Path, label_key: str, classes: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         label_key: rng.integers(0, classes, n).tolist()}, f)

    for file in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        dump(root / "cifar-10-batches-py" / file, "labels", 10)
    for file in ("train", "test"):
        dump(root / "cifar-100-python" / file, "fine_labels", 100)


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory):
    """Data root with both data sets, and untrained teachers saved as checkpoints (no training:
    these tests check wiring, not accuracy)."""
    root = tmp_path_factory.mktemp("cifar")
    write_tiny_cifar(root)
    datasets, teachers = {}, {}
    for dataset in ("cifar10", "cifar100"):
        datasets[dataset] = load_dataset(dataset, root)
        info = datasets[dataset].info
        for teacher in ("resnet34", "vgg11_bn", "wrn40_2"):
            path = root / "teachers" / dataset / f"{teacher}.pt"
            datafree.save_model(create_model(teacher, info.num_classes, info.input_shape), info, path,
                                {"name": teacher, "args": {}})
            teachers[dataset, teacher] = path
    return root, datasets, teachers


@pytest.fixture(scope="module")
def teacher_modules(tiny_cifar):
    """The saved teachers, loaded once (frozen by every trainer, so they can be shared)."""
    _, _, paths = tiny_cifar
    return {key: datafree.load_model(path).model for key, path in paths.items()}


FEW_STEPS = {"trainer.steps": 2, "trainer.g_steps": 1, "trainer.s_steps": 1, "trainer.d_steps": 1,
             "trainer.batch_size": 2, "trainer.log_every": 2, "trainer.eval_every": 0, "trainer.image_every": 0,
             "trainer.checkpoint_every": 0, "data.test_batch_size": 8, "generator.replay_size": 16,
             "method.warmup": 0}  # Fast and NAYER only synthesise during warm-up: the student must learn here
# CIFAR-100 configs differ from CIFAR-10 ones only in data set, class count and published figures:
# one method per pair runs there, each a different one.
CIFAR100_RUNS = ["resnet34-resnet18/dfad", "vgg11_bn-resnet18/zskt", "wrn40_2-wrn16_1/dafl", "wrn40_2-wrn40_1/deepinv",
                 "wrn40_2-wrn16_2/ours"]
SMOKE = [p for p in CIFAR_DISTILL if p.parts[-3] == "cifar10"] + \
        [EXPERIMENTS / "configs" / "cifar100" / f"{r}.toml" for r in CIFAR100_RUNS]


@pytest.mark.slow
@pytest.mark.parametrize("path", SMOKE, ids=name)
def test_cifar_distill_configs_run_a_few_steps(path, tiny_cifar, teacher_modules):
    root, datasets, _ = tiny_cifar
    cfg = load(path, {**FEW_STEPS, "data.root": str(root)})
    dataset = datasets[cfg.data.name]
    teacher = teacher_modules[cfg.data.name, cfg.teacher.name]
    student = create_model(cfg.student.name, dataset.info.num_classes, dataset.info.input_shape, **cfg.student.args)
    trainer = Trainer(cfg, dataset, student, teacher, run_dir=None)  # no run directory: nothing written
    metrics = trainer.fit(Monitor(None, cfg.trainer.steps, "", console=False))
    summary = trainer.summary()
    assert 0 <= metrics["student_accuracy"] <= 100 and "agreement" in metrics
    assert summary["student_steps"] == 2
    assert (summary["synthetic_samples"] > 0) == (METHODS.get(cfg.method.name).data == "synthetic")


@pytest.mark.slow
@pytest.mark.parametrize("path", [p for p in TEACHER_CONFIGS if p.parent.name.startswith("cifar")], ids=name)
def test_cifar_teacher_configs_run_a_few_steps(path, tiny_cifar):
    root, datasets, _ = tiny_cifar
    cfg = api.as_student_run(load(path, {**FEW_STEPS, "data.root": str(root)}))  # as train-teacher runs it
    dataset = datasets[cfg.data.name]
    model = create_model(cfg.student.name, dataset.info.num_classes, dataset.info.input_shape, **cfg.student.args)
    trainer = Trainer(cfg, dataset, model, None, run_dir=None)
    trainer.fit(Monitor(None, cfg.trainer.steps, "", console=False))
    assert trainer.summary()["real_samples"] == 2 * 2


@pytest.mark.slow
def test_a_cifar_config_runs_end_to_end_through_the_api(tiny_cifar, tmp_path):
    """The config's own teacher.checkpoint path, read relative to the working directory as documented."""
    root, _, teachers = tiny_cifar
    (tmp_path / "checkpoints" / "teachers" / "cifar100").mkdir(parents=True)
    (tmp_path / "checkpoints" / "teachers" / "cifar100" / "wrn40_2.pt").write_bytes(
        teachers["cifar100", "wrn40_2"].read_bytes())
    path = EXPERIMENTS / "configs" / "cifar100" / "wrn40_2-wrn16_1" / "dfq.toml"
    cfg = load(path, {**FEW_STEPS, "data.root": str(root), "run.dir": str(tmp_path / "run")})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        result = api.run("distill", cfg, quiet=True)
    assert result.metrics["student_steps"] == 2 and (tmp_path / "run" / "student.pt").is_file()
    assert "[published]" in (tmp_path / "run" / "config.toml").read_text()
