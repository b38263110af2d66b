"""Automatic choices: a method's recipe fitted to the inputs and the teacher at hand, said once.

A recipe is written for image teachers with BatchNorm. On feature vectors the `mlp` generator is
picked and the image-only parts (augmentation, `tv`, `at`) are dropped; terms that read teacher
layers it does not have (`bn` without BatchNorm, `act` without a Linear layer, any of them on a
TorchScript teacher, whose layers hooks cannot see) are dropped too. What a user set explicitly
is never dropped: it stays an error naming the setting. A data-free image student without
normalisation layers gets a gentler learning rate (`adapt_student`).
"""
from __future__ import annotations

from typing import Any

from torch import nn

from datafree.config import Config, with_choices
from datafree.errors import ConfigError
from datafree.hooks import find_stage_layers
from datafree.methods import METHODS
from datafree.methods.terms import TERMS
from datafree.models import batchnorm_layers
from datafree.sources import Network
from datafree.spec import InputSpec

IMAGE_GENERATORS = {"dcgan": "mlp", "dcgan_bn": "mlp", "dcgan_conditional": "mlp_conditional"}


def missing_layers(need: str, teacher: Network | None, spec: InputSpec) -> str | None:
    """Why the teacher cannot serve an internal a term reads (None: it can)."""
    if teacher is None or not need.startswith("teacher."):
        return None
    if teacher.scripted:
        return "a TorchScript teacher's layers cannot be read by hooks"
    layers = list(teacher.module.modules())
    has_bn = bool(batchnorm_layers(teacher.module))
    if need in ("teacher.bn", "teacher.bn_stats") and not has_bn:
        return "the teacher has no BatchNorm layers"
    if need == "teacher.instance" and not has_bn and not (  # the hooks read stages, else BatchNorm inputs (hooks.py)
            spec.is_image and find_stage_layers(teacher.module, spec.input_shape)):
        return "the teacher has neither BatchNorm layers nor convolutional stages"
    if need == "teacher.penultimate" and not any(isinstance(m, nn.Linear) for m in layers):
        return "the teacher has no nn.Linear layer"
    return None


def adapt(cfg: Config, spec: InputSpec, teacher: Network | None) -> tuple[Config, str | None]:
    """The config with what cannot work here dropped, and one line saying what and why (None: nothing)."""
    method = METHODS.get(cfg.method.name)
    changes: dict[str, Any] = {}
    said: list[str] = []
    if method.data == "synthetic" and not spec.is_image:
        name = cfg.generator.name
        if name in IMAGE_GENERATORS and "generator.name" not in cfg.given:
            changes["generator.name"] = IMAGE_GENERATORS[name]
            said.append(f"generator '{IMAGE_GENERATORS[name]}' (for feature vectors)")
        if cfg.generator.augment:
            if "generator.augment" in cfg.given:
                raise ConfigError(f"config key 'generator.augment' = {cfg.generator.augment} needs images; "
                                  f"these inputs are feature vectors of shape {spec.input_shape}: "
                                  "set generator.augment = []")
            changes["generator.augment"] = []
            said.append(f"dropped generator.augment {cfg.generator.augment} (needs images)")
    for player, terms in method.weights(cfg.method.terms).items():
        for term in terms:
            reasons = ["it needs images" for need in TERMS.get(term).needs if need == "image" and not spec.is_image]
            reasons += [why for need in TERMS.get(term).needs if (why := missing_layers(need, teacher, spec))]
            if not reasons:
                continue
            key = f"method.terms.{player}.{term}"
            if term in cfg.method.terms.get(player, {}):
                raise ConfigError(f"config key {key!r}: loss term {term!r} cannot work here: {reasons[0]}; "
                                  f"set it to 0")
            changes[key] = 0.0
            said.append(f"dropped loss term '{term}' of the {player} ({reasons[0]})")
    if not changes:
        return cfg, None
    return with_choices(cfg, changes), f"method {cfg.method.name!r} on {spec.describe()}: " + "; ".join(said)


# SGD's rate for a data-free image student without normalisation layers (DFAD's MNIST LeNet-5 recipe).
UNNORMALISED_STUDENT_LR = 0.01


def adapt_student(cfg: Config, spec: InputSpec, student: nn.Module) -> tuple[Config, str | None]:
    """A data-free image student without normalisation layers (LeNet-5) learns at SGD rate 0.01
    unless student.optim.lr was set: at the default 0.05 such a student under a BatchNorm teacher
    sat at chance for its first 500 updates (0.01: 25.8% agreement; experiments/results/digits_tuning.md),
    and LeNet-5-half on mnist5k reached 89.7% against 93.8% after 5,000 updates of `ours`
    (experiments/configs/mnist5k/). Only measured on images: feature-vector students keep the default."""
    normalised = any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))
                     for m in student.modules())
    rate = cfg.student.optim.lr
    if (normalised or not spec.is_image or METHODS.get(cfg.method.name).data != "synthetic"
            or cfg.student.optim.name != "sgd"
            or "student.optim.lr" in cfg.given or rate <= UNNORMALISED_STUDENT_LR):
        return cfg, None
    return (with_choices(cfg, {"student.optim.lr": UNNORMALISED_STUDENT_LR}),
            f"student learning rate {UNNORMALISED_STUDENT_LR:g} instead of {rate:g} (the student has no "
            f"normalisation layers; set student.optim.lr to choose)")
