"""Evaluation during and at the end of a run: the student's test accuracy, the teacher's, and how
often the two agree, on the test set (each rank its shard under DDP)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from datafree.data import eval_batches
from datafree.distributed import sum_across_ranks
from datafree.models import eval_mode

if TYPE_CHECKING:
    from datafree.trainer import Trainer


class Evaluator:
    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self.teacher_predictions: torch.Tensor | None = None  # the teacher is frozen: computed once

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        t = self.trainer
        test, info, bs, dist = t.dataset.test, t.info, t.cfg.data.test_batch_size, t.dist
        batches = lambda: eval_batches(test, info, bs, t.device, dist.rank, dist.world_size)  # noqa: E731
        if t.teacher is not None and self.teacher_predictions is None:
            self.teacher_predictions = torch.cat([t.teacher(x).argmax(1) for x, _ in batches()])
        correct = agree = teacher_correct = total = 0
        with eval_mode(t.student):
            for x, y in batches():
                s_pred = t.student(x.contiguous(memory_format=t.memory_format)).argmax(1)
                correct += int((s_pred == y).sum())
                if t.teacher is not None:
                    t_pred = self.teacher_predictions[total: total + len(y)]
                    agree += int((s_pred == t_pred).sum())
                    teacher_correct += int((t_pred == y).sum())
                total += len(y)
        counts = sum_across_ranks(torch.tensor([correct, agree, teacher_correct, total], dtype=torch.float64), dist).tolist()
        correct, agree, teacher_correct, total = counts
        metrics = {"student_accuracy": 100 * correct / total}
        if t.teacher is not None:
            metrics.update(teacher_accuracy=100 * teacher_correct / total, agreement=100 * agree / total)
        return metrics
