"""Typed run configuration: dataclasses per section, loaded from TOML with `key=value` overrides.

Values are layered, later wins: dataclass defaults → the method's recipe (`Method.defaults`)
→ the TOML file → command-line overrides. Every unknown key, wrong type or impossible value is
a `ConfigError` whose one-line message names the dotted key.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from datafree.errors import ConfigError


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 0.0  # max gradient norm; 0 disables clipping

    def check(self, key: str) -> None:
        positive(self.lr, f"{key}.lr")
        at_least(self.weight_decay, 0, f"{key}.weight_decay")
        at_least(self.momentum, 0, f"{key}.momentum")
        at_least(self.warmup_steps, 0, f"{key}.warmup_steps")
        at_least(self.grad_clip, 0, f"{key}.grad_clip")
        if self.name == "sgd" and self.nesterov and self.momentum == 0:
            raise ConfigError(f"config key '{key}.nesterov' needs momentum: "
                              f"set {key}.momentum > 0 or {key}.nesterov = false")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"config key '{key}.betas' must be two numbers in [0, 1) (got {self.betas})")


@dataclass
class DataConfig:
    name: str = "digits"  # a registered data set; "" when the inputs are described by input_shape instead
    root: str = "data"  # folder holding torchvision-format data sets
    download: bool = False  # let torchvision fetch a missing data set (needs internet)
    augment: bool = True  # the data set's standard augmentation on real training batches
    image_size: int = 0  # resize a registered image data set to this square size; 0: its own (imagefolder: 32)
    channels: int = 0  # convert a registered image data set to 1 or 3 channels; 0: its own
    # Your own model's inputs, when no registered data set describes them (see datafree.InputSpec):
    input_shape: list[int] = field(default_factory=list)  # e.g. [3, 32, 32] or [20]
    num_classes: int = 0  # 0: read from the teacher's output
    mean: list[float] = field(default_factory=list)  # the teacher's input normalisation; empty: none
    std: list[float] = field(default_factory=list)
    test_data: str = ""  # a .npz file (arrays x, and y when labelled) or an image folder; empty: none
    test_batch_size: int = 1024

    def own_input_keys(self) -> list[str]:
        """The keys set that describe your own inputs (and conflict with a registered data set)."""
        return [k for k in ("num_classes", "mean", "std", "test_data") if getattr(self, k)]

    def check(self, key: str) -> None:
        at_least(self.image_size, 0, f"{key}.image_size")
        at_most(self.image_size, 4096, f"{key}.image_size")
        if self.channels not in (0, 1, 3):
            raise ConfigError(f"config key '{key}.channels' must be 0 (the data set's own), 1 or 3 "
                              f"(got {self.channels})")
        positive(self.test_batch_size, f"{key}.test_batch_size")
        at_least(self.num_classes, 0, f"{key}.num_classes")
        if self.num_classes == 1:
            raise ConfigError(f"config key '{key}.num_classes' must be 0 (from the teacher) or at least 2 (got 1)")
        if self.name and self.input_shape:
            raise ConfigError(f"config keys '{key}.name' and '{key}.input_shape' both describe the inputs; "
                              f"give one of them")
        if not self.name and not self.input_shape:
            raise ConfigError(f"config key '{key}.name' is empty: give a registered data set or '{key}.input_shape'")
        if self.input_shape and (self.image_size or self.channels):
            raise ConfigError(f"config keys '{key}.image_size' and '{key}.channels' convert a registered data set; "
                              f"with {key}.input_shape give the shape you want instead")
        if self.input_shape:
            if len(self.input_shape) not in (1, 3) or not all(d > 0 for d in self.input_shape):
                raise ConfigError(f"config key '{key}.input_shape' must be [features] or [channels, height, width] of "
                                  f"positive sizes (got {self.input_shape})")
            if math.prod(self.input_shape) > 50_000_000:
                raise ConfigError(f"config key '{key}.input_shape' {self.input_shape} is too large for one sample")
        if (len(self.mean) > 0) != (len(self.std) > 0):
            raise ConfigError(f"config keys '{key}.mean' and '{key}.std' go together: give both or neither")

    def own_inputs_conflict(self, key: str = "data", recorded_by_teacher: bool = False) -> ConfigError:
        own = f"{key}.{self.own_input_keys()[0]}"
        if recorded_by_teacher:
            return ConfigError(f"config key '{own}' describes your own inputs, but the teacher checkpoint was trained "
                               f"on the registered data set {self.name!r}, which has its own: drop {own}")
        return ConfigError(f"config key '{own}' describes your own inputs; the registered data set {self.name!r} has "
                           f"its own (drop it, or use {key}.input_shape instead of {key}.name)")


@dataclass
class ModelConfig:
    name: str = "digits_cnn_half"  # a registered model (see `datafree list models`)
    args: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model factory
    # instead of a registered name: "package.module:function" returning the nn.Module (runs your code)
    factory: str = ""
    # weights to start from: a datafree checkpoint, a TorchScript archive, or a state_dict for `factory`
    checkpoint: str = ""
    source: str = ""  # what the model really was when it was passed as an nn.Module (recorded, not read)
    # Gradient-norm clipping at 5 (ZSKT's value) by default: a student without BatchNorm (LeNet-5) under
    # a T = 20 KL term or SGD at lr 0.05 otherwise blows up in a few steps; BatchNorm students on digits
    # stay below it (median gradient norm 0.6–1.4).
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(grad_clip=5.0))

    def check(self, key: str) -> None:
        self.optim.check(f"{key}.optim")
        if self.factory and not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", self.factory):
            raise ConfigError(f"config key '{key}.factory' must look like package.module:function "
                              f"(got {self.factory!r})")
        if self.name and self.factory:
            raise ConfigError(f"config keys '{key}.name' and '{key}.factory' both say how to build the {key}; give one")


@dataclass
class TeacherConfig(ModelConfig):
    name: str = "digits_cnn"
    # distill reads the teacher from `checkpoint` (a datafree checkpoint, a TorchScript archive, or the
    # weights of `factory`); train-teacher writes it there.


@dataclass
class GeneratorConfig:
    name: str = "dcgan"
    args: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=1e-3, betas=[0.5, 0.999],
                                                                   weight_decay=0.0))
    # The replay pool of past synthetic samples (stored in fp16) holds at most replay_size samples and
    # at most replay_mb megabytes: 131,072 8×8 samples take 16 MB, 256 MB hold 43,690 of 3×32×32.
    replay_size: int = 0  # 0 disables the pool
    replay_mb: float = 256.0
    replay_fraction: float = 0.5  # share of each student batch drawn from the pool once it is filled
    # Once full, the pool keeps a uniform sample of every sample so far ("reservoir") or the latest ("ring")
    replay_policy: Literal["reservoir", "ring"] = "reservoir"
    augment: list[str] = field(default_factory=list)  # augmentations of student batches (images; datafree/augment.py)
    # A new generator every reset_every iterations (weights re-drawn as CMI draws them, optimizer moments
    # forgotten; its learning-rate schedule goes on); 0 keeps one generator for the whole run.
    reset_every: int = 0
    # Collapse is reported when, after the first 10% of steps and collapse_warmup steps after the generator
    # was made (or re-made), a fresh synthetic batch has a class balance (entropy of the teacher's predicted
    # classes / log K) or a diversity (per-input std across the batch, in the normalised space) below these.
    collapse_entropy: float = 0.5
    collapse_diversity: float = 0.05
    collapse_warmup: int = 50

    def made_at(self, step: int) -> int:
        """The step at which the generator in use at `step` was made (re-made every reset_every steps)."""
        return step - step % self.reset_every if self.reset_every else 0

    def check(self, key: str) -> None:
        self.optim.check(f"{key}.optim")
        at_least(self.replay_size, 0, f"{key}.replay_size")
        at_least(self.reset_every, 0, f"{key}.reset_every")
        positive(self.replay_mb, f"{key}.replay_mb")
        at_least(self.collapse_warmup, 0, f"{key}.collapse_warmup")
        within(self.replay_fraction, 0, 1, f"{key}.replay_fraction")
        within(self.collapse_entropy, 0, 1, f"{key}.collapse_entropy")
        at_least(self.collapse_diversity, 0, f"{key}.collapse_diversity")


@dataclass
class DiscriminatorConfig:
    name: str = "logit"
    args: dict[str, Any] = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(name="adam", lr=2e-4, betas=[0.5, 0.999],
                                                                   weight_decay=0.0))
    loss: str = "bce"  # GAN loss: bce (non-saturating), lsgan, hinge
    spectral_norm: bool = False
    # (R1 gradient penalty: the discriminator's loss term "r1", e.g. method.terms.discriminator.r1 = 1)
    teacher_layer: str = ""  # feature discriminator: hooked layers; empty = deepest feature map
    student_layer: str = ""

    def check(self, key: str) -> None:
        self.optim.check(f"{key}.optim")


@dataclass
class MethodConfig:
    name: str = "ours"
    temperature: float = 1.0  # softmax temperature of the KL terms
    # Per player ("student", "generator", "discriminator"): term → weight, replacing the
    # method's own weight for that term; weight 0 switches a term off.
    terms: dict[str, dict[str, float]] = field(default_factory=dict)
    warmup: int = 0  # first iterations that only synthesise (no adversarial term, no student update)
    args: dict[str, Any] = field(default_factory=dict)  # the method's own settings (see its file)

    def check(self, key: str) -> None:
        positive(self.temperature, f"{key}.temperature")
        at_least(self.warmup, 0, f"{key}.warmup")


@dataclass
class TrainerConfig:
    steps: int = 2000  # outer iterations; each runs g_steps, d_steps and s_steps updates
    batch_size: int = 64
    g_steps: int = 1
    d_steps: int = 1
    s_steps: int = 1
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda, cuda:1, ...
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False  # the trained networks and their inputs in channels-last memory format
    # The frozen teacher's weights in channels-last: "auto" does so on the CPU, where oneDNN ran the forward pass
    # of every teacher measured 1.2-1.6x faster that way (experiments/results/teacher_layout_cpu.md; a small
    # student with BatchNorm trained slower, hence the teacher alone), and elsewhere follows `channels_last`.
    teacher_memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    # The frozen teacher's convolutions cut to the kernel taps that reach its input (datafree/trimmed_conv.py):
    # the same outputs and gradients; a torchvision ResNet-18 at 3x32x32 runs about twice as fast in bf16
    trim_teacher: bool = True
    # torch.compile of teacher and student: off by default because it costs more than it gives on short runs
    # (digits, CPU: ~60 s cold compile, ~2 s with a warm cache, for ~9% per step)
    compile: bool = False
    # After real-data training, BatchNorm statistics recomputed for the final weights over up to 8,192 training
    # samples: running averages lag the weights (torchvision's MobileNetV3: 22.4% → 97.2%; datafree/precise_bn.py)
    precise_bn: bool = True
    eval_every: int = 250  # test-set evaluation every N steps (and at the end); 0: only at the end
    log_every: int = 25
    image_every: int = 250  # synthetic sample grids in TensorBoard
    checkpoint_every: int = 0  # resumable run checkpoints every N steps (and at the end); 0: only at the end
    keep_checkpoints: int = 2
    threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def check(self, key: str) -> None:
        for name in ("steps", "batch_size", "g_steps", "d_steps", "s_steps", "log_every", "keep_checkpoints"):
            positive(getattr(self, name), f"{key}.{name}")
        for name in ("eval_every", "image_every", "checkpoint_every", "threads"):
            at_least(getattr(self, name), 0, f"{key}.{name}")
        within(self.seed, 0, 2**32 - 1, f"{key}.seed")  # the range numpy's seeding accepts
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except RuntimeError:
                raise ConfigError(f"config key '{key}.device' must be auto, cpu, cuda or cuda:N "
                                  f"(got {self.device!r})") from None


@dataclass
class RunConfig:
    dir: str = ""  # run directory; empty: runs/<command>-<data>-<method>-<student>-s<seed>-<time>
    # (train-teacher: runs/train-teacher-<data>-<teacher>-s<seed>-<time>)
    overwrite: bool = False


@dataclass
class PublishedConfig:
    """The published figure this run should be compared with; `datafree bench` prints it beside ours."""
    accuracy: float = 0.0  # the student's published top-1 %; 0: no published figure
    teacher_accuracy: float = 0.0  # the teacher's top-1 % in that publication
    hours: float = 0.0  # published wall-clock in GPU-hours; 0: not stated
    source: str = ""  # where the figures come from, e.g. "zju-vipa/Fast-Datafree:README.md"

    def check(self, key: str) -> None:
        within(self.accuracy, 0, 100, f"{key}.accuracy")
        within(self.teacher_accuracy, 0, 100, f"{key}.teacher_accuracy")
        at_least(self.hours, 0, f"{key}.hours")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run: RunConfig = field(default_factory=RunConfig)
    published: PublishedConfig = field(default_factory=PublishedConfig)
    # The dotted keys the user set (file and overrides), as opposed to defaults and the method's
    # recipe: automatic choices may change the latter, never the former. Not written to TOML.
    given: frozenset[str] = field(default=frozenset(), repr=False, compare=False, metadata={"internal": True})

    def check(self, key: str = "") -> None:
        for f in dataclasses.fields(self):
            section = getattr(self, f.name)
            if hasattr(section, "check"):
                section.check(f.name)
        # Beside the default data set, keys of your own inputs wait: a teacher checkpoint recording your
        # inputs replaces that default later (datafree/inputs.py refuses what is left).
        if "data.name" in self.given and self.data.name and self.data.own_input_keys():
            raise self.data.own_inputs_conflict()
        self.check_replay()
        self.check_names()
        if 0 < self.trainer.steps <= self.method.warmup:  # a run that ends in the warm-up returns an untrained student
            raise ConfigError(f"config key 'trainer.steps' is {self.trainer.steps}, within the {self.method.warmup} "
                              f"warm-up steps of method {self.method.name!r} that only synthesise: the student would "
                              f"never train; give more steps or set method.warmup lower")

    def check_replay(self) -> None:
        """A replay pool smaller than the replayed part of a student batch would fill and never be read."""
        from datafree.methods import METHODS

        g = self.generator
        method = METHODS.get(self.method.name) if self.method.name in METHODS else None
        fills = method is not None and method.fills_pool
        if fills and self.trainer.precision == "fp16":
            raise ConfigError(f"method {self.method.name!r} does not run in fp16 yet (its synthesis rounds have no "
                              f"gradient scaler): set trainer.precision = \"bf16\" or \"fp32\"")
        if fills and g.replay_size == 0:
            raise ConfigError(f"method {self.method.name!r} trains the student on its pool of synthesised samples: "
                              f"config key 'generator.replay_size' must be > 0")
        if not fills and g.replay_size > 0 and g.replay_fraction >= 1:  # no fresh samples once the pool is full
            raise ConfigError(f"config key 'generator.replay_fraction' must be < 1 when the replay pool is on "
                              f"(got {g.replay_fraction}); lower it, or set generator.replay_size = 0")
        if fills:
            return
        n_replay = replay_count(self.trainer.batch_size, g.replay_fraction)
        if 0 < g.replay_size < n_replay:
            raise ConfigError(f"config key 'generator.replay_size' must be 0 or at least {n_replay} "
                              f"(round(trainer.batch_size * generator.replay_fraction) = "
                              f"round({self.trainer.batch_size} * {g.replay_fraction})), else the pool is never read "
                              f"(got {g.replay_size})")

    def check_names(self) -> None:
        """Every name that picks a registry entry must exist (the message suggests the closest)."""
        from datafree.data import DATASETS
        from datafree.methods import METHODS
        from datafree.models import MODELS
        from discriminators import DISCRIMINATORS
        from discriminators.losses import GAN_LOSSES
        from generators import GENERATORS

        for key, registry, name in (("method.name", METHODS, self.method.name), ("data.name", DATASETS, self.data.name),
                                    ("student.name", MODELS, self.student.name),
                                    ("teacher.name", MODELS, self.teacher.name),
                                    ("generator.name", GENERATORS, self.generator.name),
                                    ("discriminator.name", DISCRIMINATORS, self.discriminator.name),
                                    ("discriminator.loss", GAN_LOSSES, self.discriminator.loss)):
            if key in ("data.name", "student.name", "teacher.name") and not name:
                continue  # described another way (data.input_shape, a factory, a module): checked where it is used
            if name not in registry:
                raise ConfigError(f"config key {key!r}: {registry.unknown_message(name)}")
        METHODS.get(self.method.name).weights(self.method.terms)  # checks method.terms
        METHODS.get(self.method.name).settings(self.method.args)  # checks method.args

    def to_dict(self) -> dict[str, Any]:
        return {f.name: dataclasses.asdict(getattr(self, f.name)) for f in dataclasses.fields(self)
                if not f.metadata.get("internal")}


def replay_count(batch_size: int, replay_fraction: float) -> int:
    """How many samples of each student batch come from the replay pool once it holds that many."""
    return int(round(batch_size * replay_fraction))


# ---------------------------------------------------------------------------------------------
# Loading


def load(path: str | Path | None = None, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Read a TOML file (optional), apply overrides (`["trainer.steps=10", ...]` or
    `{"trainer.steps": 10}`), merge the chosen method's recipe underneath, validate."""
    raw = read_toml(path) if path else {}
    return from_dict(raw, overrides)


def from_dict(raw: dict[str, Any], overrides: list[str] | dict[str, Any] | None = None,
              given: frozenset[str] | None = None) -> Config:
    """`given`: the keys of `raw` set on purpose, when `raw` is a whole resolved config (else all of its keys)."""
    raw = copy.deepcopy(raw)
    items = parse_overrides(overrides) if isinstance(overrides, list) else dict(overrides or {})
    for key, value in items.items():
        set_dotted(raw, key, value)
    if given is None:
        given = frozenset(dotted_keys(raw))
    else:  # an override of a table (method.terms.generator = {...}) counts key by key, as in a file
        tree: dict[str, Any] = {}
        for key, value in items.items():
            set_dotted(tree, key, value)
        given = given | frozenset(dotted_keys(tree))
    # Describing the inputs (or a model) another way replaces the default name, not a name you gave.
    for alternative, name in (("data.input_shape", "data.name"), ("student.factory", "student.name"),
                              ("teacher.factory", "teacher.name")):
        if alternative in given and name not in given:
            set_dotted(raw, name, "")
    method_name = (raw.get("method", {}).get("name", MethodConfig.name) if isinstance(raw.get("method"), dict)
                   else MethodConfig.name)
    raw = deep_merge(recipe_defaults(method_name), raw)
    config = build(Config, raw, "")
    config.given = given
    config.check()
    return config


def with_choices(cfg: Config, changes: dict[str, Any]) -> Config:
    """`cfg` with values datafree chose for it (an adapted recipe, the teacher's inputs): what
    counts as set on purpose stays what the user set."""
    adapted = from_dict(cfg.to_dict(), changes)
    adapted.given = cfg.given
    return adapted


def dotted_keys(raw: dict[str, Any], prefix: str = "") -> list[str]:
    """Every leaf key of a nested table, dotted (a table of term weights counts key by key)."""
    keys = []
    for key, value in raw.items():
        if isinstance(value, dict) and value:
            keys += dotted_keys(value, f"{prefix}{key}.")
        else:
            keys.append(f"{prefix}{key}")
    return keys


def recipe_defaults(method_name: str) -> dict[str, Any]:
    """The config defaults a method's recipe sets (its step ratios, temperature, ...)."""
    from datafree.methods import METHODS  # late import: methods import losses, models, ...

    if not isinstance(method_name, str) or method_name not in METHODS:
        return {}  # build() reports the bad name with the list of methods
    nested: dict[str, Any] = {}
    for key, value in METHODS.get(method_name).defaults.items():
        set_dotted(nested, key, copy.deepcopy(value))
    return nested


def read_toml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (TOML files are UTF-8; is it a checkpoint, or saved "
                          f"in another encoding?); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config file {path} cannot be read: {e.strerror}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`["trainer.lr=0.05", "student.name=mlp"]` → {key: value}; values are read as TOML
    values (numbers, booleans, lists, quoted strings), else taken as plain strings."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        parsed[key.strip()] = value
    return parsed


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = raw
    for i, part in enumerate(parents):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {'.'.join(parents[: i + 1])!r} is a value, not a section")
        node = child
    node[last] = value


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build(cls: type, raw: Any, key: str) -> Any:
    """Build dataclass `cls` from a dict, checking every key and value type."""
    where = key or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {where!r} must be a table of settings (got {shown(raw)})")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    names = list(fields)
    kwargs = {}
    for name, value in raw.items():
        dotted = f"{key}.{name}" if key else name
        if name not in names:
            close = difflib.get_close_matches(name, names, n=1)
            hint = f"; did you mean {(key + '.' if key else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {dotted!r}{hint} (keys of {where!r}: {', '.join(names)})")
        factory = fields[name].default_factory
        if isinstance(value, dict) and dataclasses.is_dataclass(hints[name]) and factory is not dataclasses.MISSING:
            # A partial table keeps this field's own defaults: `generator.optim.lr=1e-4` leaves the
            # generator's optimizer Adam rather than rebuilding it from OptimConfig's SGD defaults.
            value = {**dataclasses.asdict(factory()), **value}
        kwargs[name] = convert(hints[name], value, dotted)
    return cls(**kwargs)


def shown(value: Any) -> str:
    """A value as an error message shows it: short, and never a whole tensor or array."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"a {type(value).__name__} of shape {tuple(value.shape)}"
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}… ({type(value).__name__})"


def convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return build(hint, value, key)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key {key!r} must be one of {', '.join(map(repr, args))} (got {shown(value)})")
        return value
    if origin in (types.UnionType, typing.Union):  # X | None
        if value is None and type(None) in args:
            return None
        return convert(next(a for a in args if a is not type(None)), value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {key!r} must be a list (got {shown(value)})")
        return [convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r} must be a table (got {shown(value)})")
        return {k: convert(args[1], v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r} must be true or false (got {shown(value)})")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key {key!r} must be an integer (got {shown(value)})")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key {key!r} must be a number (got {shown(value)})")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key {key!r} must be a string (got {shown(value)})")
        return value
    raise TypeError(f"config.convert does not handle {hint!r}")  # a bug in a dataclass, not user input


# ---------------------------------------------------------------------------------------------
# Validation helpers: each names the key


def positive(value: float, key: str) -> None:
    if not value > 0:
        raise ConfigError(f"config key {key!r} must be > 0 (got {value})")
    finite(value, key)


def at_most(value: float, high: float, key: str) -> None:
    if not value <= high:
        raise ConfigError(f"config key {key!r} must be <= {high} (got {value})")


def at_least(value: float, low: float, key: str) -> None:
    if not value >= low:
        raise ConfigError(f"config key {key!r} must be >= {low} (got {value})")
    finite(value, key)


def finite(value: float, key: str) -> None:
    if value == math.inf:
        raise ConfigError(f"config key {key!r} must be a finite number (got {value})")


def within(value: float, low: float, high: float, key: str) -> None:
    if not low <= value <= high:
        raise ConfigError(f"config key {key!r} must be within [{low}, {high}] (got {value})")


# ---------------------------------------------------------------------------------------------
# Writing (the resolved config of every run is saved beside it, loadable with --config)


def to_toml(config: Config | dict[str, Any]) -> str:
    import tomli_w

    data = config.to_dict() if isinstance(config, Config) else config
    return tomli_w.dumps(without_none(data))


def without_none(value: Any) -> Any:
    """TOML has no null: unset optional values are left out (they read back as their defaults)."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [without_none(v) for v in value]
    return value
