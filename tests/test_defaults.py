"""Every registered model pair at the digits size (1x8x8) and the mnist5k size (1x32x32) trains at
default settings — the default data-free method and real-data KD — without NaN, without a dead
student, and with rising agreement; all but one, an MLP student of 32×32 images under `ours` (a strict xfail below).
LeNet-5 has no BatchNorm: the case the defaults once broke."""
import math

import pytest
from torch import nn

import datafree
from datafree.adapt import adapt, adapt_student
from datafree.config import load
from datafree.methods import METHODS
from datafree.models import create_model
from datafree.sources import Network
from datafree.spec import InputSpec

PAIRS = {
    "digits": [("digits_cnn", "digits_cnn_half"), ("digits_cnn", "digits_cnn_tiny"), ("digits_cnn", "mlp"),
               ("mlp", "digits_cnn_half")],
    # the BatchNorm CNN at 32×32: digits_cnn_tiny (1 MFLOP a sample; digits_cnn_half's 13 made these cases ~4 min)
    "mnist5k": [("lenet5", "lenet5_half"), ("lenet5", "digits_cnn_tiny"), ("digits_cnn_tiny", "lenet5"),
                ("digits_cnn_tiny", "mlp")],
}
QUIET = {"trainer.log_every": 5, "trainer.image_every": 0}
# ours under a BatchNorm teacher once left a LeNet-5 student (no BatchNorm) at chance for its first 500
# updates at the default student rate 0.05; the rate a student without normalisation now gets is 0.01.
CASES = [(d, t, s, m) for m in ("ours", "kd") for d, pairs in PAIRS.items() for t, s in pairs]
# An MLP student of 32×32 images stays at a constant prediction under `ours` (agreement 20.6 → 21.4 with two
# threads, 21.0 throughout with one; student 10%; with a 93% teacher trained 600 steps: 14%), and the run warns
# that its test answers are nearly all one class. The README's known weaknesses.
MLP_ON_IMAGES = pytest.mark.xfail(strict=True, reason="an MLP image student does not learn from ours' samples")
CASES = [pytest.param(*case, marks=MLP_ON_IMAGES) if case == ("mnist5k", "digits_cnn_tiny", "mlp", "ours") else case
         for case in CASES]


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("teachers")
    trained = {}
    for data, pairs in PAIRS.items():
        for teacher in sorted({t for t, _ in pairs}):
            result = datafree.train_teacher(teacher, data, steps=150, run_dir=root / f"{data}-{teacher}",
                                            overrides={**QUIET, "trainer.eval_every": 0}, quiet=True)
            trained[data, teacher] = result.checkpoint
    return trained


def test_a_data_free_student_without_normalisation_gets_a_gentler_rate():
    images, features = InputSpec((1, 32, 32), 10), InputSpec((20,), 10)
    lenet, ours = create_model("lenet5", 10, (1, 32, 32)), load(overrides={"method.name": "ours"})
    adapted, said = adapt_student(ours, images, lenet)
    assert adapted.student.optim.lr == 0.01 and "no normalisation layers" in said
    # left alone: a student with BatchNorm, real-data KD, a rate set on purpose, feature vectors (not measured)
    assert adapt_student(ours, images, create_model("digits_cnn_half", 10, (1, 8, 8)))[1] is None
    assert adapt_student(load(overrides={"method.name": "kd"}), images, lenet)[1] is None
    assert adapt_student(load(overrides={"method.name": "ours", "student.optim.lr": 0.05}), images, lenet)[1] is None
    assert adapt_student(ours, features, nn.Sequential(nn.Linear(20, 10)))[1] is None


def test_ours_under_a_teacher_without_batchnorm_drops_bn_and_adds_nothing():
    # with DAFL's activation prior in bn's place one mnist5k seed of five collapsed (datafree/methods/ours.py)
    images = InputSpec((1, 32, 32), 10)
    lenet = Network(create_model("lenet5", 10, (1, 32, 32)), kind="registered", source="lenet5")
    adapted, said = adapt(load(overrides={"method.name": "ours"}), images, lenet)
    assert "dropped loss term 'bn' of the generator (the teacher has no BatchNorm layers)" in said
    assert METHODS.get("ours").weights(adapted.method.terms)["generator"] == {"adv_dkl": 1.0, "oh": 1.0, "balance": 5.0}


def agreement_curve(result) -> list[float]:
    return [e["agreement"] for e in result.evaluations]


@pytest.mark.slow
@pytest.mark.parametrize("data, teacher, student, method", CASES)
def test_default_settings_train_every_small_pair(teachers, tmp_path, data, teacher, student, method):
    steps = 100 if method == "ours" else 120  # 500 student updates of ours, 120 of KD
    result = datafree.distill(teachers[data, teacher], student, method, steps=steps, run_dir=tmp_path / "run",
                              quiet=True, overrides={**QUIET, "trainer.eval_every": steps // 4})
    curve = agreement_curve(result)
    assert all(math.isfinite(v) for v in result.metrics.values() if isinstance(v, float))
    # rising by 3 points at least (a student stuck at one prediction moves by less than one), above 1.5× chance
    assert len(curve) == 4 and curve[-1] >= curve[0] + 3 and curve[-1] > 100 / 10 * 1.5, \
        (data, teacher, student, method, curve)
