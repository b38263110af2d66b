"""Automatic choices: a method's recipe fitted to the inputs and the teacher at hand, said once.

A recipe is written for image teachers with BatchNorm. On feature vectors the `mlp` generator is
picked and the image-only parts (augmentation, `tv`, `at`) are dropped; terms that read teacher
layers it does not have (`bn` without BatchNorm, `act` without a Linear layer, any of them on a
TorchScript teacher, whose layers hooks cannot see) are dropped too. What a user set explicitly
is never dropped: it stays an error naming the setting.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from datafree.config import Config, with_choices
from datafree.errors import ConfigError
from datafree.methods import METHODS
from datafree.methods.terms import TERMS
from datafree.sources import Network
from datafree.spec import InputSpec

IMAGE_GENERATORS = {"dcgan": "mlp", "dcgan_bn": "mlp", "dcgan_conditional": "mlp_conditional"}


def missing_layers(need: str, teacher: Network | None) -> str | None:
    """Why the teacher cannot serve an internal a term reads (None: it can)."""
    if teacher is None or not need.startswith("teacher."):
        return None
    if teacher.scripted:
        return "a TorchScript teacher's layers cannot be read by hooks"
    layers = list(teacher.module.modules())
    if need in ("teacher.bn", "teacher.bn_stats", "teacher.instance") and not any(
            isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None for m in layers):
        return "the teacher has no BatchNorm layers"
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
            reasons += [why for need in TERMS.get(term).needs if (why := missing_layers(need, teacher))]
            if not reasons:
                continue
            key = f"method.terms.{player}.{term}"
            if term in cfg.method.terms.get(player, {}):
                raise ConfigError(f"config key {key!r}: loss term {term!r} cannot work here: {reasons[0]}; "
                                  f"set it to 0")
            changes[key] = 0.0
            said.append(f"dropped loss term '{term}' of the {player} ({reasons[0]})")
            for substitute, weight in method.fallbacks.get(term, {}).items():
                usable = not any(need == "image" and not spec.is_image or missing_layers(need, teacher)
                                 for need in TERMS.get(substitute).needs)
                if usable and substitute not in cfg.method.terms.get(player, {}) and substitute not in terms:
                    changes[f"method.terms.{player}.{substitute}"] = weight
                    said.append(f"'{substitute}' ({weight:g}) in its place")
    if not changes:
        return cfg, None
    return with_choices(cfg, changes), f"method {cfg.method.name!r} on {spec.describe()}: " + "; ".join(said)
