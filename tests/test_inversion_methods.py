"""CMI, Fast-DFKD and NAYER: the state each method owns is trained, saved and restored exactly, the
student trains only on the pool of synthesised samples, and the warm-up does what it says."""
import copy
from types import SimpleNamespace

import pytest
import torch
from conftest import FAST

from datafree import checkpoint
from datafree.adapt import missing_layers
from datafree.config import load
from datafree.data import load_dataset
from datafree.errors import ConfigError
from datafree.models import create_model
from datafree.monitor import Monitor
from datafree.spec import InputSpec
from datafree.trainer import Trainer

ROUNDS = {"trainer.batch_size": 32, "trainer.g_steps": 2, "trainer.s_steps": 3, "student.args": {"width": 4}}
SETTINGS = {"cmi": {"method.args": {"bank_size": 256, "negatives": 64, "head_dim": 16}},
            "fast": {"method.warmup": 2},
            "nayer": {"method.warmup": 2, "method.args": {"g_life": 3}}}


def make_trainer(teacher_path, method, **overrides):
    cfg = load(overrides={**FAST, "method.name": method, **ROUNDS, **SETTINGS[method], **overrides})
    torch.manual_seed(0)
    teacher = checkpoint.load_model(teacher_path).model
    student = create_model("digits_cnn_half", 10, (1, 8, 8), width=4)
    return Trainer(cfg, load_dataset("digits"), student, teacher, run_dir=None)


def tensors(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("method", ["cmi", "fast", "nayer"])
def test_a_run_saved_and_restored_midway_ends_bit_identical(digits_teacher, method):
    whole = make_trainer(digits_teacher, method)
    for _ in range(6):
        whole.train_step()
    first = make_trainer(digits_teacher, method)
    for _ in range(3):
        first.train_step()
    state = copy.deepcopy(first.state_dict())
    second = make_trainer(digits_teacher, method)
    second.load_state_dict(state)
    for _ in range(3):
        second.train_step()
    for name, module in whole.modules().items():
        assert equal(tensors(module), tensors(second.modules()[name])), name
    assert len(whole.pool) == len(second.pool) and torch.equal(whole.pool.samples[: len(whole.pool)],
                                                               second.pool.samples[: len(second.pool)])


def test_cmi_trains_its_head_and_fills_its_bank(digits_teacher):
    trainer = make_trainer(digits_teacher, "cmi")
    contrast = trainer.player("generator").terms["cr"]
    assert trainer.modules()["generator.cr"] is contrast  # saved, restored and checked with the run
    head = tensors(contrast.head)
    trainer.train_step()
    assert int(contrast.stored) == 32 and not equal(head, tensors(contrast.head))
    assert bool(contrast.bank[:32].abs().sum(1).gt(0).all()) and not bool(contrast.bank[32:].any())
    params = {id(p) for p in trainer.player("generator").params}
    assert all(id(p) in params for p in contrast.head.parameters())


def test_fast_moves_the_shared_generator_only_by_its_meta_step_and_blends_bn_statistics(digits_teacher):
    trainer = make_trainer(digits_teacher, "fast")
    before = tensors(trainer.generator)
    momentum = trainer.player("generator").terms["bn_mmt"]
    assert not bool(momentum.started)
    trainer.train_step()
    after = tensors(trainer.generator)
    assert not equal(before, after) and bool(momentum.started)
    assert float(momentum.mean0.abs().sum()) > 0


def test_nayer_renews_its_noisy_layer_every_round_and_balances_classes(digits_teacher):
    trainer = make_trainer(digits_teacher, "nayer", **{"method.args": {"g_life": 100, "rounds": 1, "warmup_rounds": 1}})
    noisy = [layer.weight.detach().clone() for layer in trainer.generator.noisy]
    trainer.train_step()
    assert all(not torch.equal(a, b.weight) for a, b in zip(noisy, trainer.generator.noisy))
    _, labels = trainer.generator.sample(30)
    assert torch.bincount(labels, minlength=10).tolist() == [3] * 10


@pytest.mark.parametrize("method", ["cmi", "fast", "nayer"])
def test_the_student_trains_only_on_the_pool_and_waits_for_the_warmup(digits_teacher, method):
    trainer = make_trainer(digits_teacher, method, **{"method.warmup": 2})
    student = tensors(trainer.student)
    trainer.train_step()  # warm-up: synthesis only, no adversarial term
    assert equal(student, tensors(trainer.student)) and len(trainer.pool) > 0
    assert trainer.counters["student_steps"] == 0
    assert not any(k.startswith("loss/generator/adv") for k in trainer.reporter.sums)
    trainer.train_step()
    trainer.train_step()
    assert trainer.counters["student_steps"] == 3 and not equal(student, tensors(trainer.student))
    assert any(k.startswith("loss/generator/adv") for k in trainer.reporter.sums)
    samples = trainer.counters["synthetic_samples"]
    trainer.update(trainer.player("student"))  # a student batch draws no fresh generator sample
    assert trainer.counters["synthetic_samples"] == samples


def test_inversion_methods_need_a_pool(digits_teacher):
    from datafree.errors import ConfigError

    with pytest.raises(ConfigError, match="trains the student on its pool of synthesised samples"):
        load(overrides={"method.name": "nayer", "generator.replay_size": 0})


def test_cmi_contrasts_the_stage_statistics_of_a_teacher_without_batchnorm():
    teacher = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                                  torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 10)).eval()
    images = InputSpec((1, 8, 8), 10)
    assert missing_layers("teacher.instance", SimpleNamespace(scripted=False, module=teacher), images) is None
    assert missing_layers("teacher.bn", SimpleNamespace(scripted=False, module=teacher), images) is not None
    cfg = load(overrides={**FAST, "method.name": "cmi", **ROUNDS, **SETTINGS["cmi"],
                          "method.terms": {"generator": {"bn": 0.0}}})  # what the automatic choices would drop
    student = create_model("digits_cnn_half", 10, (1, 8, 8), width=4)
    trainer = Trainer(cfg, load_dataset("digits"), student, teacher, run_dir=None)
    contrast = trainer.player("generator").terms["cr"]
    head = tensors(contrast.head)
    trainer.train_step()
    assert contrast.bank.shape[1] == 2 * (4 + 4)  # local and global views: the 8x8 and 4x4 stages' channel means
    assert int(contrast.stored) == 32 and not equal(head, tensors(contrast.head))


def test_a_whole_fit_runs_and_evaluates(digits_teacher):
    trainer = make_trainer(digits_teacher, "nayer", **{"trainer.steps": 4})
    metrics = trainer.fit(Monitor(None, 4, "", console=False))
    assert 0 <= metrics["student_accuracy"] <= 100 and len(trainer.evaluations) == 1


def test_fast_and_nayer_run_on_a_feature_vector_teacher_without_batchnorm():
    """No `bn`/`bn_mmt` to match (the terms are dropped) and an `mlp` generator without a DCGAN
    `project` layer: Fast's reset of the generator's first layer at 60% of the run still works."""
    import datafree

    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Linear(12, 32), torch.nn.ReLU(), torch.nn.Linear(32, 3)).eval()
    for method in ("fast", "nayer"):
        result = datafree.distill(teacher, torch.nn.Sequential(torch.nn.Linear(12, 3)), method, input_shape=(12,),
                                  steps=5, quiet=True, overrides={**ROUNDS, "student.args": {}, "method.warmup": 1,
                                                                  "trainer.eval_every": 0, "trainer.log_every": 5})
        assert result.metrics["student_steps"] == 4 * 3, method  # warm-up iteration: no student update


def test_cmi_keeps_the_last_rows_when_its_bank_is_smaller_than_a_batch(digits_teacher):
    trainer = make_trainer(digits_teacher, "cmi", **{"method.args": {"bank_size": 8, "bank_mb": 1.0}})
    for _ in range(2):
        trainer.train_step()
    assert int(trainer.player("generator").terms["cr"].stored) == 2 * 8


@pytest.mark.parametrize("setting, value", [("g_life", 0), ("rounds", -1), ("g_life", 1.5)])
def test_method_settings_out_of_range_are_config_errors(setting, value):
    from datafree.errors import ConfigError

    with pytest.raises(ConfigError, match=f"method.args.{setting}"):
        load(overrides={"method.name": "nayer", f"method.args.{setting}": value})


@pytest.mark.parametrize("method", ["fast", "nayer"])
def test_the_generator_still_learns_after_the_student_has_trained(digits_teacher, method):
    """A student update freezes the generator's parameters; each synthesis round must unfreeze them."""
    trainer = make_trainer(digits_teacher, method, **{"method.args": {"g_life": 100}} if method == "nayer" else {})
    for _ in range(3):  # warm-up (2 iterations), then one with student updates
        trainer.train_step()
    assert trainer.counters["student_steps"] > 0

    def learned() -> dict:  # parameters only (BatchNorm statistics move without learning); not NAYER's
        return {k: v.detach().clone() for k, v in trainer.generator.named_parameters()  # re-drawn noisy layer
                if not k.startswith("noisy")}

    before = learned()
    trainer.train_step()
    assert not equal(before, learned())


@pytest.mark.parametrize("method", ["cmi", "fast"])
def test_latent_code_methods_refuse_a_generator_that_needs_class_labels(digits_teacher, method):
    trainer = make_trainer(digits_teacher, method, **{"generator.name": "nayer"})
    with pytest.raises(ConfigError, match="needs class labels"):
        trainer.train_step()
