"""Every registered model pair at the digits size (1x8x8) and the mnist5k size (1x32x32) trains at
default settings — the default data-free method and real-data KD — without NaN, without a dead
student, and with rising agreement. LeNet-5 has no BatchNorm: the case the defaults once broke."""
import math

import pytest

import datafree

PAIRS = {
    "digits": [("digits_cnn", "digits_cnn_half"), ("digits_cnn", "digits_cnn_tiny"), ("digits_cnn", "mlp"),
               ("mlp", "digits_cnn_half")],
    "mnist5k": [("lenet5", "lenet5_half"), ("lenet5", "digits_cnn_half"), ("digits_cnn", "lenet5"),
                ("digits_cnn_half", "mlp")],
}
QUIET = {"trainer.log_every": 5, "trainer.image_every": 0}
# Known failure: ours leaves a LeNet-5 student (no BatchNorm) at chance under a BatchNorm teacher on
# mnist5k for its first 500 updates (KD trains the same pair); strict, so a fix shows up here.
STUCK = pytest.mark.xfail(strict=True, reason="ours: LeNet-5 student under a BatchNorm teacher stays at chance")
CASES = [pytest.param(d, t, s, m, marks=STUCK if (m, d, t, s) == ("ours", "mnist5k", "digits_cnn", "lenet5") else ())
         for m in ("ours", "kd") for d, pairs in PAIRS.items() for t, s in pairs]


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
    assert len(curve) == 4 and curve[-1] > max(curve[0], 100 / 10 * 1.5), (data, teacher, student, method, curve)
