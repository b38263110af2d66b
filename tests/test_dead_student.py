"""The dead-student warning: said once, after a long enough stretch, with the likely cause; never
for a student that answers like its targets."""
from __future__ import annotations

from types import SimpleNamespace

import torch

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
