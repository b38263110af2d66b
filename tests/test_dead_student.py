"""The dead-student warning: said once, after a long enough stretch, with the likely cause; never
for a student that answers like its targets."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

import datafree
from datafree.config import load
from datafree.reporting import ONE_CLASS_UPDATES, Reporter

K, BATCH = 10, 64


class Recorder:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.texts: list[tuple[str, str]] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def text(self, step: int, tag: str, text: str) -> None:
        self.texts.append((tag, text))


def reporter() -> Reporter:
    trainer = SimpleNamespace(cfg=load(), info=SimpleNamespace(num_classes=K), step=0)
    r = Reporter(trainer)
    r.monitor = Recorder()
    return r


def feed(r: Reporter, updates: int, student: torch.Tensor, teacher: torch.Tensor) -> None:
    """`updates` student updates, checked every 100 as the log lines do."""
    for done in range(1, updates + 1):
        r.observe_student(student, teacher)
        if done % 100 == 0:
            r.trainer.step += 20
            r.check_dead_student()


def spread_teacher(confidence: float) -> torch.Tensor:
    """Targets spread over the classes; `confidence` its top probability (about)."""
    targets = torch.arange(BATCH) % K
    logits = torch.full((BATCH, K), 0.0)
    logits[torch.arange(BATCH), targets] = torch.log(torch.tensor(confidence * (K - 1) / (1 - confidence)))
    return logits


def one_class_student() -> torch.Tensor:
    logits = torch.zeros(BATCH, K)
    logits[:, 3] = 5.0
    return logits


def test_all_one_class_against_an_unsure_teacher_names_the_samples_once():
    r = reporter()
    feed(r, ONE_CLASS_UPDATES - 100, one_class_student(), spread_teacher(0.2))
    assert r.monitor.lines == []  # a fresh student answers one class for a while
    feed(r, 600, one_class_student(), spread_teacher(0.2))
    assert len(r.monitor.lines) == 1 and r.monitor.texts[0][0] == "student/dead"
    assert "all one class" in r.monitor.lines[0] and "the teacher is unsure" in r.monitor.lines[0]
    assert "averages 0.20" in r.monitor.lines[0]


def test_all_one_class_against_a_sure_teacher_names_the_learning_rate():
    r = reporter()
    feed(r, ONE_CLASS_UPDATES, one_class_student(), spread_teacher(0.9))
    assert len(r.monitor.lines) == 1 and "student.optim.lr = 0.05" in r.monitor.lines[0]


def test_a_uniform_student_is_warned_after_the_short_stretch():
    r = reporter()
    feed(r, 100, torch.zeros(BATCH, K), spread_teacher(0.9))
    assert len(r.monitor.lines) == 1 and "uniform" in r.monitor.lines[0]


def test_a_student_that_answers_like_its_targets_is_not_warned():
    r = reporter()
    teacher = spread_teacher(0.9)
    feed(r, 2 * ONE_CLASS_UPDATES, teacher * 2, teacher)
    # nor one answering one class where the targets are that class too
    one = one_class_student()
    feed(r, 2 * ONE_CLASS_UPDATES, one, one)
    assert r.monitor.lines == [] and r.dead_updates == 0


def test_one_answer_on_the_test_inputs_is_warned_once_after_the_stretch_and_only_then():
    r = reporter()
    r.trainer.generator, r.trainer.counters = object(), {"student_steps": ONE_CLASS_UPDATES - 1}
    r.check_test_answers(0.9, 0.2)
    assert r.monitor.lines == []  # a fresh student answers one class for a while
    r.trainer.counters["student_steps"] = ONE_CLASS_UPDATES
    r.check_test_answers(0.7, 0.2)  # spread enough
    r.check_test_answers(0.9, 0.6)  # the teacher answers one class too
    assert r.monitor.lines == []
    r.check_test_answers(0.9, 0.2)
    r.check_test_answers(0.95, 0.2)
    assert len(r.monitor.lines) == 1 and r.monitor.texts[0][0] == "student/test_answers"
    assert "90% of them, the teacher's for 20%" in r.monitor.lines[0]
    restored = reporter()
    restored.load_state_dict(r.state_dict())
    assert restored.one_answer_warned
    real_data = reporter()
    real_data.trainer.generator, real_data.trainer.counters = None, {"student_steps": 10 * ONE_CLASS_UPDATES}
    real_data.check_test_answers(1.0, 0.1)  # a real-data run: the training guard above covers it
    assert real_data.monitor.lines == []


class OneAnswer(nn.Module):
    """A student that answers class 3 whatever it is shown and whatever it learns."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(K))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), K) + 1000 * F.one_hot(torch.tensor(3), K)


def test_a_data_free_run_whose_student_gives_the_test_set_one_answer_says_so(digits_teacher, tmp_path, capsys):
    result = datafree.distill(digits_teacher, OneAnswer(), "ours", steps=10, run_dir=tmp_path / "run",
                              overrides={"trainer.s_steps": ONE_CLASS_UPDATES // 10, "trainer.eval_every": 5,
                                         "trainer.log_every": 5, "trainer.image_every": 0})
    assert result.metrics["agreement"] < 20
    err = capsys.readouterr()
    said = [line for line in (err.out + err.err).splitlines() if "on the test inputs the student gives" in line]
    assert len(said) == 1 and said[0].startswith("step 10:") and "100% of them" in said[0], said
