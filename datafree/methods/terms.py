"""Loss terms: each turns a `Batch` into one scalar to minimise, for the players it is meant for.
A method picks terms by name and weights them; the trainer sums, logs and checks every term.

`needs` names the internals a term reads through hooks, so the teacher's forward pass records
BatchNorm statistics or features only when some term will use them.

A term with state (a projection head, a memory bank) is an `nn.Module` class registered with
`@term_module`: each run builds one instance per player that uses it, from a `TermContext`. Its
parameters join that player's optimizer and its buffers are saved and restored with the run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from datafree import losses
from datafree.batch import Batch
from datafree.registry import Registry

if TYPE_CHECKING:
    from datafree.config import Config
    from datafree.hooks import Probe
    from datafree.spec import InputSpec


@dataclass(frozen=True)
class TermContext:
    """What a stateful term may look at when it is built (e.g. to size a head to the teacher)."""

    config: "Config"
    info: "InputSpec"
    teacher: "Probe | None"
    student: "Probe"
    device: torch.device


@dataclass(frozen=True)
class Term:
    fn: Callable[[Batch], torch.Tensor] | None  # a stateless term
    players: tuple[str, ...]
    needs: frozenset[str]  # "teacher.bn", "teacher.penultimate", "{teacher,student}.stages", "features", "image"
    doc: str
    module: type[nn.Module] | None = None  # a stateful term: built per run and player from a TermContext
    adversarial: bool = False  # a negated teacher-student disagreement (switched off during a method's warm-up)

    def bind(self, context: TermContext) -> Callable[[Batch], torch.Tensor]:
        """What computes this term in one run: the function, or a new instance of the module."""
        return self.fn if self.module is None else self.module(context).to(context.device)


TERMS: Registry[Term] = Registry("loss term")


def term(name: str, players: tuple[str, ...], needs: tuple[str, ...] = ()):
    def add(fn: Callable[[Batch], torch.Tensor]) -> Callable[[Batch], torch.Tensor]:
        TERMS.add(name, Term(fn, players, frozenset(needs), (fn.__doc__ or "").strip(),
                             adversarial=name.startswith("adv_")))
        return fn
    return add


def term_module(name: str, players: tuple[str, ...], needs: tuple[str, ...] = ()):
    """Register an `nn.Module` class whose `forward(batch)` returns the term: a term with state."""
    def add(cls: type[nn.Module]) -> type[nn.Module]:
        TERMS.add(name, Term(None, players, frozenset(needs), (cls.__doc__ or "").strip(), module=cls))
        return cls
    return add


# --- student ---------------------------------------------------------------------------------

@term("ce", ("student",))
def cross_entropy(b: Batch) -> torch.Tensor:
    """Cross-entropy against the real labels (on synthetic data: the teacher's argmax)."""
    return F.cross_entropy(b.student.logits, b.labels)


@term("kl", ("student",))
def kl(b: Batch) -> torch.Tensor:
    """KL(t‖s) at method.temperature, times T²."""
    return losses.kd_kl(b.student.logits, b.teacher.logits, b.temperature)


@term("l1", ("student",))
def l1(b: Batch) -> torch.Tensor:
    """Mean absolute difference of logits (DFAD)."""
    return losses.l1_logits(b.student.logits, b.teacher.logits)


@term("at", ("student",), needs=("teacher.stages", "student.stages", "image"))
def attention(b: Batch) -> torch.Tensor:
    """Attention transfer on activations of matching resolution (ZSKT)."""
    return losses.attention_transfer(b.student.stages, b.teacher.stages)


# --- generator: adversarial (maximise disagreement, so the sign is negative) ----------------

@term("adv_l1", ("generator",))
def adv_l1(b: Batch) -> torch.Tensor:
    """−L1(s, t) (DFAD)."""
    return -losses.l1_logits(b.student.logits, b.teacher.logits)


@term("adv_kl", ("generator",))
def adv_kl(b: Batch) -> torch.Tensor:
    """−KL(t‖s) (ZSKT, DFQ)."""
    return -losses.kd_kl(b.student.logits, b.teacher.logits, b.temperature)


@term("adv_js", ("generator",))
def adv_js(b: Batch) -> torch.Tensor:
    """−JS(s, t) (DeepInversion's adaptive competition)."""
    return -losses.js_divergence(b.student.logits, b.teacher.logits)


@term("adv_dkl", ("generator",))
def adv_decision_kl(b: Batch) -> torch.Tensor:
    """−KL(t‖s) on samples where s and t agree (CMI/Fast's decision adversarial)."""
    return -losses.decision_masked_kl(b.student.logits, b.teacher.logits, b.temperature)


# --- generator: priors from the teacher ------------------------------------------------------

@term("bn", ("generator",), needs=("teacher.bn",))
def batchnorm_statistics(b: Batch) -> torch.Tensor:
    """Distance of the batch's BatchNorm statistics from the teacher's running ones."""
    return b.teacher.bn


@term("oh", ("generator",))
def one_hot(b: Batch) -> torch.Tensor:
    """CE of the teacher against its argmax (or the conditional generator's classes)."""
    return losses.one_hot(b.teacher.logits, b.sampled_labels)


@term("act", ("generator",), needs=("teacher.penultimate",))
def activation(b: Batch) -> torch.Tensor:
    """−mean |teacher penultimate features| (DAFL)."""
    return losses.activation(b.teacher.penultimate)


@term("balance", ("generator",))
def balance(b: Batch) -> torch.Tensor:
    """Negative entropy of the batch-mean teacher prediction, + log K (DAFL, DFQ)."""
    return losses.balance(b.teacher.logits)


@term("coverage", ("generator",))
def coverage(b: Batch) -> torch.Tensor:
    """KL(uniform ‖ batch-mean teacher prediction): a class balance that pulls back a one-class collapse.

    `balance` measured the other way; its gradient survives where `balance`'s vanishes."""
    return losses.coverage(b.teacher.logits)


@term("tv", ("generator",), needs=("image",))
def total_variation(b: Batch) -> torch.Tensor:
    """Squared total variation of the samples (image prior)."""
    return losses.total_variation(b.x)


@term("l2", ("generator",))
def l2(b: Batch) -> torch.Tensor:
    """Mean squared sample value (image prior of DeepInversion)."""
    return losses.l2_prior(b.x)


# --- discriminator game (GAN-KD) ---------------------------------------------------------------

@term("gan", ("discriminator", "student"), needs=("features",))
def gan(b: Batch) -> torch.Tensor:
    """Discriminator: tell teacher outputs (real) from student outputs (fake). Student: fool it."""
    d, loss = b.nets.discriminator, b.nets.gan_loss
    fake = d(b.nets.view(b.student, "student"), b.labels)
    if b.player == "student":
        return loss.generator(fake)
    real = d(b.nets.view(b.teacher, "teacher"), b.labels)
    b.diagnostics["disc/acc_teacher"] = (real.detach() > loss.threshold).float().mean()
    b.diagnostics["disc/acc_student"] = (fake.detach() <= loss.threshold).float().mean()
    return loss.discriminator(real, fake)


@term("r1", ("discriminator",), needs=("features",))
def r1_penalty(b: Batch) -> torch.Tensor:
    """R1: ½‖∇ D(teacher output)‖² (Mescheder et al. 2018), keeps the discriminator smooth."""
    d = b.nets.discriminator
    real = b.nets.view(b.teacher, "teacher").detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(d(real, b.labels).sum(), real, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()
