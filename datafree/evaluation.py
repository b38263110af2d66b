"""Evaluation during and at the end of a run, labelled as what it measures:

- on labelled test data: the student's and the teacher's accuracy and how often they agree;
- on unlabelled test inputs: agreement with the teacher and KL(teacher ‖ student);
- for a run with a generator and no labelled test data: agreement and KL on a fixed held-out set
  of synthetic samples, drawn from the current generator with their own seed (never trained on,
  and drawing them does not touch the training's random stream or the generator's BatchNorm
  statistics). With no test data at all, these are the run's figures.
Under DDP each rank evaluates its shard of the test set.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from datafree.data import eval_batches
from datafree.distributed import sum_across_ranks
from datafree.models import eval_mode

if TYPE_CHECKING:
    from datafree.trainer import Trainer

HELDOUT_SAMPLES = 1024
HELDOUT_SEED = 20_240_601  # its own seed: the same held-out noise at every evaluation of every run


def kl_sum(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Σ over samples of KL(softmax(t) ‖ softmax(s)) at temperature 1."""
    log_t, log_s = F.log_softmax(teacher_logits.float(), 1), F.log_softmax(student_logits.float(), 1)
    return float((log_t.exp() * (log_t - log_s)).sum())


class Evaluator:
    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        self.teacher_logits: torch.Tensor | None = None  # on the test set; the teacher is frozen: computed once
        # on the test set at the last evaluation, the share of the student's and of the teacher's most common answer
        self.answer_shares: tuple[float, float] | None = None

    @torch.no_grad()
    def __call__(self) -> dict[str, float]:
        t = self.trainer
        metrics: dict[str, float] = {}
        if t.dataset.test is not None:
            metrics.update(self.on_test())
        labelled = t.dataset.test is not None and t.dataset.test.labelled
        if t.generator is not None and t.teacher is not None and not labelled:
            metrics.update(self.on_heldout())
        return metrics

    def on_test(self) -> dict[str, float]:
        t = self.trainer
        test, info, bs, dist = t.dataset.test, t.info, t.cfg.data.test_batch_size, t.dist
        batches = lambda: eval_batches(test, info, bs, t.device, dist.rank, dist.world_size)  # noqa: E731
        if t.teacher is not None and self.teacher_logits is None:
            self.teacher_logits = torch.cat([t.teacher(x).float() for x, _ in batches()])
        correct = agree = teacher_correct = total = 0
        kl = 0.0
        k = info.num_classes
        student_answers = torch.zeros(k, dtype=torch.float64, device=t.device)  # how often each class was said
        with eval_mode(t.student):
            for x, y in batches():
                s_logits = t.student(x.contiguous(memory_format=t.memory_format)).float()
                s_pred = s_logits.argmax(1)
                student_answers += torch.bincount(s_pred, minlength=k)
                if y is not None:
                    correct += int((s_pred == y).sum())
                if t.teacher is not None:
                    t_logits = self.teacher_logits[total: total + len(x)]
                    t_pred = t_logits.argmax(1)
                    agree += int((s_pred == t_pred).sum())
                    kl += kl_sum(s_logits, t_logits)
                    if y is not None:
                        teacher_correct += int((t_pred == y).sum())
                total += len(x)
        teacher_answers = (torch.bincount(self.teacher_logits.argmax(1), minlength=k).double().cpu()
                           if t.teacher is not None else torch.zeros(k, dtype=torch.float64))
        counts = torch.cat([torch.tensor([correct, agree, teacher_correct, total, kl], dtype=torch.float64),
                            student_answers.cpu(), teacher_answers])
        counts = sum_across_ranks(counts, dist)  # one reduction for every count
        correct, agree, teacher_correct, total, kl = counts[:5].tolist()
        student_answers, teacher_answers = counts[5:].view(2, k)
        self.answer_shares = ((student_answers.max() / total).item(), (teacher_answers.max() / total).item()) \
            if t.teacher is not None else None
        metrics = {"student_accuracy": 100 * correct / total} if test.labelled else {}
        if t.teacher is not None:
            metrics.update(agreement=100 * agree / total, test_kl=kl / total)
            if test.labelled:
                metrics["teacher_accuracy"] = 100 * teacher_correct / total
        metrics["test_samples"] = int(total)
        return metrics

    def on_heldout(self) -> dict[str, float]:
        t = self.trainer
        generator = t.generator
        buffers = [b.clone() for b in generator.buffers()]
        with torch.random.fork_rng(devices=[t.device] if t.device.type == "cuda" else []), eval_mode(t.student):
            torch.manual_seed(HELDOUT_SEED)
            agree, kl = 0, 0.0
            for start in range(0, HELDOUT_SAMPLES, 256):
                x, _ = generator.sample(min(256, HELDOUT_SAMPLES - start))
                x = x.float().contiguous(memory_format=t.memory_format)
                s_logits, t_logits = t.student(x).float(), t.teacher(x).float()
                agree += int((s_logits.argmax(1) == t_logits.argmax(1)).sum())
                kl += kl_sum(s_logits, t_logits)
        for b, saved in zip(generator.buffers(), buffers):
            b.copy_(saved)
        return {"heldout_agreement": 100 * agree / HELDOUT_SAMPLES, "heldout_kl": kl / HELDOUT_SAMPLES,
                "heldout_samples": HELDOUT_SAMPLES}
