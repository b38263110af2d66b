"""Building and checking everything a run's config asks for, before any training starts: the
networks on their device, the probes that read their internals, and one `Player` record per
learner with its loss terms, modules, parameters and optimizer.

Everything here fails at start-up with a message naming the problem: a teacher and student that
disagree on the classes, a generator whose samples the teacher cannot take, a loss term that
cannot work with these networks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from datafree.config import Config, DiscriminatorConfig, GeneratorConfig
from datafree.distributed import Dist, wrap
from datafree.errors import ConfigError
from datafree.hooks import Probe, find_stage_layers, output_shape
from datafree.methods import METHODS, PLAYERS, Method
from datafree.methods.terms import TERMS, TermContext
from datafree.models import check_model_io, count_flops, count_parameters, dry_forward, eval_mode
from datafree.players import Player
from datafree.spec import InputSpec
from datafree.trimmed_conv import trim_convolutions
from discriminators import DISCRIMINATORS, Discriminator, apply_spectral_norm
from discriminators.losses import GAN_LOSSES
from generators import GENERATORS, Generator


@dataclass
class Assembly:
    """The built run: networks (the teacher frozen), probes over them, and the players."""

    method: Method
    device: torch.device
    autocast_dtype: torch.dtype | None
    memory_format: torch.memory_format
    teacher: nn.Module | None
    student: nn.Module
    generator: Generator | None
    discriminator: Discriminator | None
    gan_loss: object | None
    teacher_probe: Probe | None
    student_probe: Probe
    discriminator_ddp: nn.Module | None
    generator_ddp: nn.Module | None
    captures: dict[str, dict[str, set[str]]]
    players: list[Player]


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'trainer.device' is {name!r} but no CUDA device is available; "
                          "use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None and d.enabled:  # under torchrun: this process's GPU
        device = torch.device("cuda", d.local_rank)
    return device


def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 or AMX); elsewhere it is emulated."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private query: assume the best if it is gone
        return True


def precision_warning(precision: str, device: torch.device) -> str | None:
    """bf16 where it is emulated is slower, not faster: on an AVX2-only CPU (2 cores) a ResNet-18
    forward at 3×32×32, batch 64, took 321 ms under bf16 autocast against 37 ms in fp32 (channels-last)."""
    if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        return ("trainer.precision is bf16 but this CPU has no bf16 instructions (AVX-512 or AMX): expect the run "
                "to be several times slower than in fp32")
    return None


def teacher_memory_format(choice: str, memory_format: torch.memory_format, device: torch.device,
                          shape: tuple[int, ...]) -> torch.memory_format:
    """The frozen teacher's memory format. Only its weights change: a convolution with channels-last
    weights answers in channels-last whatever its input's layout, so its inputs stay as they are."""
    if len(shape) != 3 or choice == "contiguous":
        return torch.contiguous_format
    if choice == "channels_last" or device.type == "cpu":
        return torch.channels_last
    return memory_format


def assemble(cfg: Config, info: InputSpec, student: nn.Module, teacher: nn.Module | None, dist: Dist) -> Assembly:
    """Check the networks against each other and the input, move them to the device, build the
    generator and discriminator the method needs, and one player record per learner."""
    settings = cfg.trainer
    method = METHODS.get(cfg.method.name)
    weights = method.weights(cfg.method.terms)
    names = [p for p in PLAYERS if weights[p]]
    if "student" not in names:
        raise ConfigError(f"method {method.name!r} has no student term left; check method.terms.student")
    if dist.enabled and method.fills_pool:  # said before the run directory is made
        raise ConfigError(f"method {method.name!r} does not run under torchrun yet (its synthesis rounds and pool "
                          f"are per process); run it in one process")
    device = pick_device(settings.device, dist)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[settings.precision]
    shape = info.input_shape
    memory_format = torch.channels_last if settings.channels_last and len(shape) == 3 else torch.contiguous_format
    teacher_format = teacher_memory_format(settings.teacher_memory_format, memory_format, device, shape)

    # --- networks -------------------------------------------------------------------------
    if settings.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in student.modules()):
        raise ConfigError(f"config key 'trainer.batch_size' must be at least 2: the model trained here has BatchNorm "
                          f"layers, which cannot train on batches of {settings.batch_size}")
    needs_teacher = any(t != "ce" for p in names for t in weights[p])
    if needs_teacher and teacher is None:
        raise ConfigError(f"method {method.name!r} needs a teacher: pass --teacher teacher.pt")
    if teacher is not None:
        check_teacher(teacher, student, info)  # before check_model_io: it names both class counts
    check_model_io(student, cfg.student.name, info.num_classes, shape)
    if teacher is not None:
        teacher = teacher.to(device, memory_format=teacher_format).eval()
        for p in teacher.parameters():  # (a TorchScript module has no requires_grad_ of its own)
            p.requires_grad_(False)
        if settings.trim_teacher:
            trim_convolutions(teacher, shape)
    student = student.to(device, memory_format=memory_format).train()
    generator = (build_generator(cfg.generator, info, device, memory_format, teacher, student, settings.batch_size)
                 if method.data == "synthetic" else None)
    uses_features = "discriminator" in names and DISCRIMINATORS.get(cfg.discriminator.name).uses_features
    layers = feature_layers(cfg.discriminator, teacher, student, info) if uses_features else ("", "")
    discriminator = (build_discriminator(cfg.discriminator, info, teacher, student, layers, device)
                     if "discriminator" in names else None)
    gan_loss = GAN_LOSSES.get(cfg.discriminator.loss) if discriminator is not None else None

    # DDP wrappers (identity in a single process); torch.compile on top if asked.
    adapters = [p for m in (discriminator.student_side_modules() if discriminator else []) for p in m.parameters()]
    student_ddp = wrap(student, dist, device)
    generator_ddp = wrap(generator, dist, device) if generator is not None else None
    discriminator_ddp = wrap(discriminator, dist, device, ignore=adapters) if discriminator is not None else None
    compile_ = torch.compile if settings.compile else (lambda m: m)
    student_probe = Probe(compile_(student_ddp), shape, layers[1], inner=student)
    teacher_probe = Probe(compile_(teacher), shape, layers[0], inner=teacher) if teacher is not None else None
    captures = term_captures({p: weights[p] for p in names}, info, discriminator)
    if "stages" in captures["student"]["student"]:
        check_attention(teacher_probe, student_probe, info, device)

    # --- one record per player, each with its own optimizer (and scheduler, and fp16 scaler) ---
    context = TermContext(cfg, info, teacher_probe, student_probe, device)
    adapter_ids = {id(p) for p in adapters}
    owned = {"generator": ({"generator": generator} if generator is not None else {}, generator_ddp,
                           cfg.generator.optim, settings.g_steps, None, []),
             "discriminator": ({"discriminator": discriminator} if discriminator is not None else {},
                               discriminator_ddp, cfg.discriminator.optim, settings.d_steps,
                               [p for p in discriminator.parameters() if id(p) not in adapter_ids]
                               if discriminator else None,
                               []),
             "student": ({"student": student}, student_ddp, cfg.student.optim, settings.s_steps, None, adapters)}
    players = []
    for name in names:
        modules, wrapped, optim, repeats, params, shared = owned[name]
        if not modules:  # e.g. generator terms for a real-data method: there is no generator to train
            given = ", ".join(f"method.terms.{name}.{t}" for t in weights[name])
            raise ConfigError(f"method {method.name!r} has no {name} ({method.data} data), so {given} cannot apply; "
                              f"remove it")
        terms = {term: TERMS.get(term).bind(context) for term in weights[name]}
        stateful = {f"{name}.{term}": fn for term, fn in terms.items() if isinstance(fn, nn.Module)}
        if params is None:
            params = [p for m in modules.values() for p in m.parameters()]
        params = params + [p for m in stateful.values() for p in m.parameters()] + shared
        player = Player(name, terms, weights[name], {**modules, **stateful}, params, optim, repeats, settings.steps,
                        wrapped=wrapped, shared_params=shared, turn=method.turns.get(name))
        player.build_optimizer(device, settings.precision == "fp16")
        players.append(player)
    return Assembly(method, device, autocast_dtype, memory_format, teacher, student, generator, discriminator, gan_loss,
                    teacher_probe, student_probe, discriminator_ddp, generator_ddp, captures, players)


def check_teacher(teacher: nn.Module, student: nn.Module, info: InputSpec) -> None:
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


def build_generator(gc: GeneratorConfig, info: InputSpec, device: torch.device, memory_format: torch.memory_format,
                    teacher: nn.Module, student: nn.Module, batch_size: int) -> Generator:
    for hint in ("reference_parameters", "reference_flops", "batch_size"):
        if hint in gc.args:
            raise ConfigError(f"config key 'generator.args.{hint}' is set from the run; remove it "
                              f"(set generator.args.width to size the generator yourself)")
    served_flops = sum(count_flops(model, info.input_shape) for model in (teacher, student) if model is not None)
    try:
        generator = GENERATORS.get(gc.name)(info, reference_parameters=count_parameters(student),
                                            reference_flops=served_flops, batch_size=batch_size, **gc.args)
    except TypeError as e:
        raise ConfigError(f"generator {gc.name!r} does not take these arguments {gc.args}: {e}") from None
    generator = generator.to(device, memory_format=memory_format).train()
    with torch.no_grad():
        x, _ = generator.sample(2)
    if tuple(x.shape[1:]) != tuple(info.input_shape):
        raise ConfigError(f"generator {gc.name!r} makes samples of shape {tuple(x.shape[1:])}, but the teacher "
                          f"takes {tuple(info.input_shape)}; pick a generator for this input")
    return generator


def feature_layers(dc: DiscriminatorConfig, teacher: nn.Module, student: nn.Module, info: InputSpec) -> tuple[str, str]:
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


def build_discriminator(dc: DiscriminatorConfig, info: InputSpec, teacher: nn.Module, student: nn.Module,
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


def term_captures(weights: dict[str, dict[str, float]], info: InputSpec,
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


def check_attention(teacher: Probe, student: Probe, info: InputSpec, device: torch.device) -> None:
    """The 'at' term compares feature maps of equal resolution: there must be at least one."""
    x = torch.zeros(2, *info.input_shape, device=device)
    with eval_mode(student.inner):
        shared = set(teacher(x, {"stages"}).stages) & set(student(x, {"stages"}).stages)
    if not shared:
        raise ConfigError("loss term 'at' needs teacher and student feature maps of a common resolution; "
                          "these have none")
