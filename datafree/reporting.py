"""What a run reports while it trains: every loss term of every player averaged between log lines,
learning rates, throughput and the budget spent; for data-free runs, health figures of a fresh
synthetic batch (class balance, diversity, agreement), histograms and sample grids, the
generator-collapse warning and a warning when the student gives the test inputs nearly one answer;
for every run, the dead-student warning.

A dead student answers every input alike: all one class while its targets spread over several,
or a uniform answer that agrees with them at chance. Training looks normal otherwise (no NaN, a
flat loss), so the run says so, once, on the console and in TensorBoard, with the likely cause: a
learning rate too high for it (weights blown into dead ReLUs or a constant output), or, when the
teacher is unsure of the samples it is taught on, samples that carry no decision to learn (a
generator gone astray: seen on mnist5k, where the teacher's top probability on them averaged about 0.2
and a KL at T = 20 between two near-uniform answers was already small).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from datafree import diagnostics
from datafree.distributed import mean_across_ranks
from datafree.models import eval_mode
from datafree.monitor import Monitor

if TYPE_CHECKING:
    from datafree.trainer import Trainer

DEAD_STUDENT_UPDATES = 100  # a stretch this long of dead-looking student updates is warned about
# All one class while the targets spread: a fresh student does that for its first ~250 updates on mnist5k
# (LeNet-5-half, seeds 0, 1, 2, 4: at most 250), so only a longer stretch is warned about.
ONE_CLASS_UPDATES = 500
# Nearly one answer on the test inputs, where the teacher's answers spread (an MLP student of 32×32 images
# under `ours`: 83–88% one class, the teacher's most common answer 21%; tests/test_defaults.py).
ONE_ANSWER_SHARE = 0.8
SPREAD_SHARE = 0.5  # the teacher's answers spread: its most common one is given for at most half of the inputs


class Reporter:
    def __init__(self, trainer: "Trainer") -> None:
        self.trainer = trainer
        gc = trainer.cfg.generator
        self.collapse = diagnostics.CollapseDetector(gc.collapse_entropy, gc.collapse_diversity)
        self.monitor: Monitor | None = None
        self.sums: dict[str, torch.Tensor] = {}  # loss terms summed since the last log line
        self.counts: dict[str, int] = {}
        # per student update: [agreeing, top-class share, normalised entropy]
        self.student_window: list[torch.Tensor] = []
        self.dead_updates = 0  # consecutive student updates that looked dead
        self.dead_warned = False
        self.one_answer_warned = False  # on the test inputs

    def state_dict(self) -> dict[str, Any]:
        return {"collapsed": self.collapse.collapsed, "dead_updates": self.dead_updates,
                "dead_warned": self.dead_warned, "one_answer_warned": self.one_answer_warned}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.collapse.collapsed = state["collapsed"]
        self.dead_updates, self.dead_warned = state["dead_updates"], state["dead_warned"]
        self.one_answer_warned = state.get("one_answer_warned", False)  # checkpoints before 2026-12-07 lack it

    @torch.no_grad()
    def observe_student(self, logits: torch.Tensor, teacher_logits: torch.Tensor | None,
                        labels: torch.Tensor | None = None) -> None:
        """Record how a student batch's answers compare with its targets, the teacher's answers or else
        the labels (no device sync here)."""
        k = logits.shape[1]
        targets = teacher_logits.argmax(1) if teacher_logits is not None else labels
        predictions = logits.detach().argmax(1)
        share = torch.bincount(predictions, minlength=k).max() / len(predictions)
        target_share = torch.bincount(targets, minlength=k).max() / len(targets)
        p = F.softmax(logits.detach().float(), 1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1).mean() / math.log(k)
        # Without a teacher (scratch, real labels) there is no confidence to judge: count it as sure.
        sure = (F.softmax(teacher_logits.detach().float(), 1).max(1).values.mean() if teacher_logits is not None
                else torch.ones((), device=logits.device))
        self.student_window.append(torch.stack([(predictions == targets).float().mean(), share.float(),
                                                target_share.float(), entropy, sure]))

    def check_dead_student(self) -> None:
        t = self.trainer
        if not self.student_window:
            return
        agreement, share, target_share, entropy, sure = torch.stack(self.student_window).mean(0).tolist()
        updates, self.student_window = len(self.student_window), []
        k = t.info.num_classes
        uniform = entropy >= 0.98 and agreement <= 1.5 / k
        one_class = share >= 0.9 and target_share <= 0.5
        self.dead_updates = self.dead_updates + updates if uniform or one_class else 0
        stretch = DEAD_STUDENT_UPDATES if uniform else ONE_CLASS_UPDATES
        if (uniform or one_class) and not self.dead_warned and self.dead_updates >= stretch:
            self.dead_warned = True
            how = "uniform" if uniform else "all one class"
            if sure < 0.5:
                cause = (f"the teacher is unsure of the samples the student learns from (its top probability "
                         f"averages {sure:.2f}), so they carry no decision to learn: try another seed or method")
            else:
                cause = (f"a learning rate too high for it (student.optim.lr = {t.cfg.student.optim.lr:g}): lower "
                         f"it, or set student.optim.grad_clip")
            message = (f"step {t.step}: the student is not learning: for {self.dead_updates} updates its answers were "
                       f"{how} and agreed with its targets {agreement:.0%} of the time (chance: {1 / k:.0%}). The "
                       f"likely cause is {cause}")
            self.monitor.message(message)
            self.monitor.text(t.step, "student/dead", message)

    def check_test_answers(self, student_share: float, teacher_share: float) -> None:
        """A data-free student can follow the teacher on its synthetic samples and still give the test
        inputs nearly one answer: what it learnt there does not carry over to real inputs. The training
        guard above cannot see this (its student is alive on the samples), so the evaluation says it, once,
        after the stretch a fresh student may spend on one answer."""
        t = self.trainer
        if (self.one_answer_warned or t.generator is None or t.counters["student_steps"] < ONE_CLASS_UPDATES
                or student_share < ONE_ANSWER_SHARE or teacher_share > SPREAD_SHARE):
            return
        self.one_answer_warned = True
        message = (f"step {t.step}: on the test inputs the student gives nearly one answer (its most common one for "
                   f"{student_share:.0%} of them, the teacher's for {teacher_share:.0%}): what it learns from the "
                   f"synthetic samples does not carry over to real inputs. Seen with a fully connected student of "
                   f"images (DFAD and DAFL did no better there): give it a convolutional one")
        if self.monitor:
            self.monitor.message(message)
            self.monitor.text(t.step, "student/test_answers", message)

    def accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    def log(self, samples_per_s: float) -> None:
        t = self.trainer
        keys = sorted(self.sums)
        means = (mean_across_ranks(torch.stack([self.sums[k] / self.counts[k] for k in keys]), t.dist).tolist()
                 if keys else [])
        values = dict(zip(keys, means))
        self.sums, self.counts = {}, {}
        for player in t.players:
            values[f"lr/{player.name}"] = player.optimizer.param_groups[0]["lr"]
        values["throughput/samples_per_s"] = samples_per_s * t.dist.world_size
        values["budget/student_steps"] = t.counters["student_steps"]
        values["budget/synthetic_samples"] = t.counters["synthetic_samples"] * t.dist.world_size
        values["budget/seconds"] = t.counters["seconds"]
        if t.generator is not None:
            values.update(self.synthetic_diagnostics())
        self.check_dead_student()
        self.monitor.scalars(t.step, values)
        figures = {"loss": f"{values.get('loss/student/total', float('nan')):.4f}"}
        if "student_accuracy" in t.last_eval:
            figures["acc"] = f"{t.last_eval['student_accuracy']:.2f}%"
        else:  # no labelled test data: agreement with the teacher is the figure
            agreement = t.last_eval.get("agreement", t.last_eval.get("heldout_agreement"))
            if agreement is not None:
                figures["agree"] = f"{agreement:.2f}%"
        self.monitor.progress(t.step, figures)

    @torch.no_grad()
    def synthetic_diagnostics(self) -> dict[str, float]:
        """Class balance, diversity and agreement on one fresh synthetic batch (eval-mode student),
        histograms of the teacher's answers and, every image_every steps, a sample grid."""
        t = self.trainer
        generator, step, steps = t.generator, t.step, t.cfg.trainer.steps
        # Drawn aside from the training RNG stream, with the generator's BatchNorm statistics put
        # back afterwards, so that how often a run logs does not change what it trains.
        buffers = [b.clone() for b in generator.buffers()]
        with torch.random.fork_rng(devices=[t.device] if t.device.type == "cuda" else []):
            x, _ = generator.sample(t.cfg.trainer.batch_size)
        for b, saved in zip(generator.buffers(), buffers):
            b.copy_(saved)
        t_logits = t.teacher(x)
        with eval_mode(t.student):
            s_logits = t.student(x)
        balance, spread = diagnostics.class_balance(t_logits), diagnostics.diversity(x)
        counts = torch.bincount(t_logits.argmax(1), minlength=t.info.num_classes)
        message = None
        # a fresh generator is collapsed: let it, and each new one (generator.reset_every), warm up
        if step > steps // 10 and step - t.cfg.generator.made_at(step) > t.cfg.generator.collapse_warmup:
            message = self.collapse.check(step, balance, spread, int(counts.argmax()),
                                          float(counts.max() / counts.sum()))
        if message:
            self.monitor.message(message)
            self.monitor.text(step, "synthetic/collapse", message)
        self.monitor.histogram(step, "synthetic/teacher_class", t_logits.argmax(1),
                               bins=np.arange(t.info.num_classes + 1) - 0.5)
        self.monitor.histogram(step, "synthetic/teacher_max_prob", F.softmax(t_logits.float(), 1).max(1).values)
        self.monitor.histogram(step, "synthetic/student_max_prob", F.softmax(s_logits.float(), 1).max(1).values)
        every = t.cfg.trainer.image_every
        if t.info.is_image and every and (step % every == 0 or step == steps):
            self.monitor.image(step, "synthetic/samples", sample_grid(t.info.denormalize(x[:64])))
        return {"synthetic/class_balance": balance, "synthetic/diversity": spread,
                "synthetic/agreement": diagnostics.agreement(s_logits, t_logits)}


def sample_grid(images: torch.Tensor) -> torch.Tensor:
    """A grid of up to 64 images, enlarged to at least 32 px so that 8×8 digits are visible."""
    from torchvision.utils import make_grid

    scale = max(1, 32 // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images.float(), scale_factor=scale, mode="nearest")
    return make_grid(images.clamp(0, 1), nrow=8, padding=2)
