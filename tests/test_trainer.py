"""Wiring of the adversarial game: who is updated by whom, and what each term sees."""
import copy

import pytest
import torch
from conftest import FAST

from datafree import checkpoint
from datafree.config import load
from datafree.data import Split, load_dataset
from datafree.errors import ConfigError
from datafree.methods import METHODS
from datafree.models import create_model
from datafree.monitor import Monitor
from datafree.trainer import Trainer

# Synthesis-round methods at test size: a few inner steps per round, a small memory bank.
ROUND_METHODS = {"cmi": {"method.args": {"bank_size": 256, "negatives": 64}}, "fast": {}, "nayer": {}}


def make_trainer(teacher_path, method, student=None, teacher=None, dataset=None, **overrides):
    small = {"trainer.g_steps": 2, "trainer.s_steps": 2, "method.warmup": 0, **ROUND_METHODS[method]} \
        if method in ROUND_METHODS else {}
    cfg = load(overrides={**FAST, "method.name": method, "trainer.batch_size": 32, "student.args": {"width": 4},
                          **small, **overrides})
    dataset = dataset or load_dataset("digits")
    teacher = teacher or checkpoint.load_model(teacher_path).model
    student = student or create_model("digits_cnn_half", 10, (1, 8, 8), width=4)
    return Trainer(cfg, dataset, student, teacher, run_dir=None)


def params(module):
    return [p.detach().clone() for p in module.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("method", ["dfad", "zskt", "dfq", "deepinv", "ours"])
def test_adversarial_term_is_nonzero_and_reaches_the_generator(digits_teacher, method):
    trainer = make_trainer(digits_teacher, method)
    for _ in range(10):  # a fresh student may agree with the teacher nowhere, which empties adv_dkl's mask
        trainer.update(trainer.player("student"))
    before = params(trainer.generator)
    terms = trainer.update(trainer.player("generator"))
    adversarial = [k for k in terms if k.startswith("loss/generator/adv")]
    assert adversarial and all(terms[k] != 0 for k in adversarial)
    grads = [p.grad for p in trainer.generator.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    assert not same(before, params(trainer.generator))


def test_the_student_is_the_student_not_the_teacher(digits_teacher):
    student = create_model("digits_cnn_half", 10, (1, 8, 8), width=4)
    trainer = make_trainer(digits_teacher, "dfad", student=student)
    assert trainer.student is student and trainer.student_probe.inner is student
    assert trainer.teacher_probe.inner is trainer.teacher and trainer.teacher is not student
    batch = trainer.make_batch(trainer.player("generator"))
    with torch.no_grad():
        assert torch.allclose(batch.student.logits, student(batch.x), atol=1e-5)
        assert not torch.allclose(batch.student.logits, batch.teacher.logits)
    teacher = checkpoint.load_model(digits_teacher).model
    with pytest.raises(ConfigError, match="the student is the teacher"):
        make_trainer(digits_teacher, "dfad", student=teacher, teacher=teacher)


@pytest.mark.parametrize("method", sorted(METHODS.names()))
def test_teacher_never_changes(digits_teacher, method):
    teacher = checkpoint.load_model(digits_teacher).model
    state = copy.deepcopy(teacher.state_dict())
    trainer = make_trainer(digits_teacher, method, teacher=teacher, **{"trainer.steps": 2})
    trainer.fit(Monitor(None, 2, "", console=False))
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in state.items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_student_steps_never_update_the_generator_and_generator_steps_never_the_student(digits_teacher):
    trainer = make_trainer(digits_teacher, "dfad")
    g_before, s_before = params(trainer.generator), params(trainer.student)
    trainer.update(trainer.player("student"))
    assert same(g_before, params(trainer.generator))
    assert not same(s_before, params(trainer.student))
    s_before = params(trainer.student)
    trainer.update(trainer.player("generator"))
    assert same(s_before, params(trainer.student))


class Untouchable(Split):
    """A training split that fails the test if anything reads it."""

    def __getattribute__(self, name):
        if name in ("x", "y"):
            raise AssertionError("a data-free run read the real training data")
        return super().__getattribute__(name)

    def __len__(self):
        return 1347


@pytest.mark.parametrize("method", [m for m in METHODS.names() if METHODS.get(m).data == "synthetic"])
def test_data_free_methods_never_read_the_training_split(digits_teacher, method):
    dataset = load_dataset("digits")
    dataset.train = Untouchable(torch.empty(0), torch.empty(0))
    trainer = make_trainer(digits_teacher, method, dataset=dataset, **{"trainer.steps": 2})
    metrics = trainer.fit(Monitor(None, 2, "", console=False))
    assert 0 <= metrics["student_accuracy"] <= 100


def test_missing_teacher_and_mismatched_classes(digits_teacher):
    with pytest.raises(ConfigError, match="needs a teacher"):
        Trainer(load(overrides={"method.name": "kd"}), load_dataset("digits"),
                create_model("digits_cnn_half", 10, (1, 8, 8), width=4), None, None)
    with pytest.raises(ConfigError, match="teacher predicts 10 classes but the student 3"):
        make_trainer(digits_teacher, "kd", student=create_model("digits_cnn_half", 3, (1, 8, 8), width=4))


def test_terms_that_cannot_work_fail_at_start_up(digits_teacher):
    wine = load_dataset("wine")
    mlp_teacher = create_model("mlp", 3, (13,))
    with pytest.raises(ConfigError, match="loss term 'tv' needs image inputs"):
        Trainer(load(overrides={"method.name": "deepinv", "student.name": "mlp", "generator.name": "mlp"}), wine,
                create_model("mlp", 3, (13,)), mlp_teacher, None)
    with pytest.raises(ConfigError, match="generator 'dcgan' makes images"):
        Trainer(load(overrides={"method.name": "dfad", "student.name": "mlp"}), wine, create_model("mlp", 3, (13,)),
                mlp_teacher, None)


def test_feature_vector_teacher_distills_data_free():
    """The core assumes nothing about images: an MLP teacher on a 30-feature table."""
    import datafree

    data = load_dataset("breast_cancer")
    teacher = create_model("mlp", 2, data.info.input_shape, hidden=[32])
    student = create_model("mlp", 2, data.info.input_shape, hidden=[8])
    cfg = load(overrides={**FAST, "data.name": "breast_cancer", "method.name": "dfq", "student.name": "mlp",
                          "generator.name": "mlp", "trainer.steps": 3, "trainer.batch_size": 32})
    metrics = Trainer(cfg, data, student, teacher, None).fit(Monitor(None, 3, "", console=False))
    assert {"student_accuracy", "teacher_accuracy", "agreement"} <= set(metrics)
    assert datafree.InputSpec is type(data.info)


def test_reset_every_gives_a_new_generator_with_fresh_optimizer_moments(digits_teacher):
    """generator.reset_every = 3: the first three iterations are those of a run without it; the fourth
    starts from re-drawn weights (N(0, 0.02)) and an Adam that has taken one step, not four."""
    def run(**overrides):
        torch.manual_seed(0)  # the generator is built from the global random stream
        trainer = make_trainer(digits_teacher, "ours", **{"trainer.g_steps": 1, **overrides})
        snapshots = []
        for _ in range(4):
            trainer.train_step()
            snapshots.append(params(trainer.generator))
        optimizer = trainer.player("generator").optimizer
        return trainer, snapshots, {int(optimizer.state[p]["step"]) for p in trainer.generator.parameters()}

    _, kept, kept_steps = run()
    renewed, snapshots, renewed_steps = run(**{"generator.reset_every": 3})
    assert all(same(a, b) for a, b in zip(kept[:3], snapshots[:3]))
    assert not same(kept[3], snapshots[3])
    assert kept_steps == {4} and renewed_steps == {1}
    conv = next(m for m in renewed.generator.modules() if isinstance(m, torch.nn.Conv2d))
    assert 0.015 < float(conv.weight.std()) < 0.025


def test_reset_every_re_makes_a_nayer_generator_its_own_way(digits_teacher):
    """NAYER's generator starts anew with its noisy layers drawn N(0, 1), not CMI's N(0, 0.02)."""
    torch.manual_seed(0)
    trainer = make_trainer(digits_teacher, "ours", **{"trainer.g_steps": 1, "generator.name": "nayer",
                                                      "generator.reset_every": 3})
    for _ in range(3):
        trainer.train_step()
    before = trainer.generator.noisy[0].weight.detach().clone()
    trainer.train_step()
    after = trainer.generator.noisy[0].weight.detach()
    assert not torch.equal(before, after)
    assert 0.9 < float(after.std()) < 1.1
