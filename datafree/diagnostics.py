"""Health figures of synthetic batches, and generator-collapse detection.

- class balance: entropy of the histogram of the teacher's predicted classes / log K
  (1 = every class equally often, 0 = one class only);
- diversity: the per-input standard deviation across the batch, averaged over inputs, in the
  normalised input space (0 = identical samples; real data sit near its own reference value);
- agreement: share of samples where student and teacher predict the same class.
A collapse (all samples alike, or one class) makes the KD loss vanish while the student learns
nothing (huawei-noah/Efficient-Computing#6); the detector says so once per episode.
"""
from __future__ import annotations

import math

import torch


def class_balance(teacher_logits: torch.Tensor) -> float:
    k = teacher_logits.shape[1]
    counts = torch.bincount(teacher_logits.argmax(1), minlength=k).float()
    p = counts / counts.sum()
    entropy = -(p * p.clamp_min(1e-12).log()).sum()
    return max(0.0, float(entropy / math.log(k)))  # one class gives -0.0, which prints as "-0.00"


def diversity(x: torch.Tensor) -> float:
    return float(x.float().flatten(1).std(0).mean())


def agreement(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    return float((student_logits.argmax(1) == teacher_logits.argmax(1)).float().mean())


class CollapseDetector:
    """Says when the generator's samples fall below a class balance or a diversity, and when they
    are clear of it again. Recovery needs a margin above the thresholds (hysteresis): a generator
    hovering at the threshold would otherwise print collapse, recovered, collapse within a few log
    lines (mnist5k, class balance 0.50, 0.58, 0.41 at steps 775, 800, 900 of one run)."""

    def __init__(self, min_balance: float, min_diversity: float) -> None:
        self.min_balance, self.min_diversity = min_balance, min_diversity
        # clear of a collapse: 0.1 above the balance threshold (half-way to 1 at most; none when it is off)
        self.recovered_balance = min_balance + min(0.1, (1 - min_balance) / 2) if min_balance > 0 else 0.0
        self.recovered_diversity = 1.1 * min_diversity
        self.collapsed = False

    def check(self, step: int, balance: float, spread: float, top_class: int, top_share: float) -> str | None:
        """A message when a collapse starts (and when it ends); None otherwise."""
        problems = []
        if balance < self.min_balance:
            problems.append(f"class balance {balance:.2f} < {self.min_balance} (teacher predicts class "
                            f"{top_class} for {top_share:.0%} of samples; the term that can pull it back: "
                            "method.terms.generator.coverage=5 in place of balance)")
        if spread < self.min_diversity:
            problems.append(f"sample diversity {spread:.3f} < {self.min_diversity} (samples nearly identical)")
        if problems and not self.collapsed:
            self.collapsed = True
            return f"step {step}: generator collapse: " + "; ".join(problems)
        clear = balance >= self.recovered_balance and spread >= self.recovered_diversity
        if clear and self.collapsed:
            self.collapsed = False
            return f"step {step}: generator recovered (class balance {balance:.2f}, diversity {spread:.3f})"
        return None
