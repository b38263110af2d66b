"""Building and checking the players a config asks for, before any training starts.

Everything here fails at start-up with a message naming the problem: a teacher and student that
disagree on the classes, a generator whose samples the teacher cannot take, a loss term that
cannot work with these networks.
"""
from __future__ import annotations

import torch
from torch import nn

from datafree.config import DiscriminatorConfig, GeneratorConfig
from datafree.data import DataInfo
from datafree.errors import ConfigError
from datafree.hooks import Probe, find_stage_layers, output_shape
from datafree.methods.terms import TERMS
from datafree.models import dry_forward, eval_mode
from discriminators import DISCRIMINATORS, Discriminator, apply_spectral_norm
from generators import GENERATORS, Generator


def check_teacher(teacher: nn.Module, student: nn.Module, info: DataInfo) -> None:
    """Teacher and student must answer with the same number of classes as the data set has."""
    def classes(net: nn.Module) -> int | None:
        try:
            out = dry_forward(net, info.input_shape)
        except (RuntimeError, AssertionError, ValueError):
            return None  # it does not take these inputs: check_model_io says so
        return out.shape[1] if out.dim() == 2 else None

    if teacher is student:  # a published benchmark once did this: every adversarial term is then 0
        raise ConfigError("the student is the teacher object; pass a separate student model")
    t_classes, s_classes = classes(teacher), classes(student)
    if t_classes is None:
        raise ConfigError(f"the teacher does not map inputs of shape {tuple(info.input_shape)} to class logits; "
                          f"use the data set the teacher was trained on")
    if s_classes is None:
        return  # check_model_io explains what is wrong with the student
    if t_classes != s_classes:
        raise ConfigError(f"the teacher predicts {t_classes} classes but the student {s_classes}; "
                          f"build the student for {t_classes} classes")
    if t_classes != info.num_classes:
        raise ConfigError(f"the teacher predicts {t_classes} classes but data set {info.name} has {info.num_classes}; "
                          f"use the data set the teacher was trained on")


def build_generator(gc: GeneratorConfig, info: DataInfo, device: torch.device,
                    memory_format: torch.memory_format) -> Generator:
    try:
        generator = GENERATORS.get(gc.name)(info, **gc.args)
    except TypeError as e:
        raise ConfigError(f"generator {gc.name!r} does not take these arguments {gc.args}: {e}") from None
    generator = generator.to(device, memory_format=memory_format).train()
    with torch.no_grad():
        x, _ = generator.sample(2)
    if tuple(x.shape[1:]) != tuple(info.input_shape):
        raise ConfigError(f"generator {gc.name!r} makes samples of shape {tuple(x.shape[1:])}, but the teacher "
                          f"takes {tuple(info.input_shape)}; pick a generator for this input")
    return generator


def feature_layers(dc: DiscriminatorConfig, teacher: nn.Module, student: nn.Module, info: DataInfo) -> tuple[str, str]:
    """Layers a feature discriminator reads: configured, or each network's deepest feature map."""
    def deepest(model: nn.Module, configured: str) -> str:
        if configured:
            return configured
        stages = find_stage_layers(model, info.input_shape) if info.is_image else []
        if not stages:
            raise ConfigError("discriminator 'feature' found no convolutional feature map; set "
                              "discriminator.teacher_layer / student_layer or use discriminator 'logit'")
        return stages[-1]

    return deepest(teacher, dc.teacher_layer), deepest(student, dc.student_layer)


def build_discriminator(dc: DiscriminatorConfig, info: DataInfo, teacher: nn.Module, student: nn.Module,
                        layers: tuple[str, str], device: torch.device) -> Discriminator:
    cls = DISCRIMINATORS.get(dc.name)
    t_shape = s_shape = (info.num_classes,)
    if cls.uses_features:
        t_shape = output_shape(teacher, layers[0], info.input_shape)
        s_shape = output_shape(student, layers[1], info.input_shape)
    try:
        discriminator = cls(info.num_classes, t_shape, s_shape, **dc.args)
    except TypeError as e:
        raise ConfigError(f"discriminator {dc.name!r} does not take these arguments {dc.args}: {e}") from None
    if dc.spectral_norm:
        apply_spectral_norm(discriminator.net if hasattr(discriminator, "net") else discriminator)
    return discriminator.to(device)


def term_captures(weights: dict[str, dict[str, float]], info: DataInfo,
                  discriminator: Discriminator | None) -> dict[str, dict[str, set[str]]]:
    """Per player: which internals ("bn", "stages", ...) the teacher's and the student's forward
    passes must record for that player's terms. Terms that cannot work here are errors."""
    captures = {}
    for player, terms in weights.items():
        need: dict[str, set[str]] = {"teacher": set(), "student": set()}
        for name in terms:
            for item in TERMS.get(name).needs:
                if item == "image":
                    if not info.is_image:
                        raise ConfigError(f"loss term {name!r} needs image inputs; {info.name} has feature vectors")
                elif item == "features":
                    if discriminator is not None and discriminator.uses_features:
                        need["teacher"].add("feature")
                        need["student"].add("feature")
                else:
                    net, what = item.split(".")
                    need[net].add(what)
        captures[player] = need
    return captures


def check_attention(teacher: Probe, student: Probe, info: DataInfo, device: torch.device) -> None:
    """The 'at' term compares feature maps of equal resolution: there must be at least one."""
    x = torch.zeros(2, *info.input_shape, device=device)
    with eval_mode(student.inner):
        shared = set(teacher(x, {"stages"}).stages) & set(student(x, {"stages"}).stages)
    if not shared:
        raise ConfigError("loss term 'at' needs teacher and student feature maps of a common resolution; these have none")
