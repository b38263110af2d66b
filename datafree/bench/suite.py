"""The suite file: its sections as typed dataclasses read with `datafree.config.build` (every key
and type checked, an unknown key named with the closest known one), then the checks across
sections that build cannot make, then every run's config resolved and validated, all before
anything runs."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafree.config import Config, build, load, read_toml
from datafree.errors import ConfigError
from datafree.methods import METHODS

REPO_ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------
# The file as written


@dataclass
class TeacherEntry:
    """`[teachers.<name>]`: trained first, once; reused while its checkpoint exists."""
    config: str = ""  # teacher config file, relative to the suite file; must set teacher.checkpoint
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted keys or nested tables


@dataclass
class PairEntry:
    """`[[pairs]]`: one teacher, one distillation config per method, each method × seed a run."""
    name: str = ""  # table heading and run folder
    teacher: str = ""  # a key of [teachers]
    configs: str = ""  # config path pattern with {method}, relative to the suite file
    methods: list[str] = field(default_factory=list)
    seeds: list[int] | None = None  # None: the suite's seeds
    overrides: dict[str, Any] = field(default_factory=dict)  # every run of this pair
    method_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # method → its own overrides


@dataclass
class SuiteFile:
    description: str = ""
    seeds: list[int] = field(default_factory=lambda: [0])
    reference: str = "kd"  # every other method's p-value is against this one (pairs that run it)
    budgets: list[float] = field(default_factory=list)  # wall-clock seconds: accuracy at each
    time_to: list[float] = field(default_factory=list)  # accuracy %: seconds until a run first reaches it
    overrides: dict[str, Any] = field(default_factory=dict)  # every run, teachers included
    teachers: dict[str, TeacherEntry] = field(default_factory=dict)
    pairs: list[PairEntry] = field(default_factory=list)


REQUIRED_PAIR_KEYS = ("name", "teacher", "configs", "methods")


# ---------------------------------------------------------------------------------------------
# The suite resolved: configs loaded, runs listed


@dataclass
class TeacherSpec:
    name: str
    config: Config  # resolved, with the suite's overrides
    config_path: Path

    @property
    def checkpoint(self) -> Path:
        return Path(self.config.teacher.checkpoint)


@dataclass
class RunSpec:
    pair: str
    method: str
    seed: int
    teacher: str  # key of Suite.teachers
    config: Config  # resolved, teacher.checkpoint set to the pair's teacher; run.dir set when it runs
    config_path: Path

    @property
    def key(self) -> str:
        return f"{self.pair} / {self.method} / seed {self.seed}"


@dataclass
class PairSpec:
    name: str
    teacher: str
    methods: list[str]
    seeds: list[int]


@dataclass
class Suite:
    name: str
    path: Path
    description: str
    teachers: dict[str, TeacherSpec]
    pairs: list[PairSpec]
    runs: list[RunSpec] = field(default_factory=list)  # seed-major: a half-done suite has whole seeds
    reference: str = "kd"
    budgets: list[float] = field(default_factory=list)
    time_to: list[float] = field(default_factory=list)


def find_suite(suite: str | Path) -> Path:
    """A suite name (experiments/suites/<name>.toml, from the working directory or this
    checkout) or a path to a suite TOML."""
    path = Path(suite)
    if path.suffix == ".toml" or len(path.parts) > 1:
        if not path.is_file():
            raise ConfigError(f"suite file not found: {path}")
        return path
    folders = [Path("experiments/suites"), REPO_ROOT / "experiments" / "suites"]
    for folder in folders:
        if (folder / f"{suite}.toml").is_file():
            return folder / f"{suite}.toml"
    known = sorted({p.stem for folder in folders if folder.is_dir() for p in folder.glob("*.toml")})
    raise ConfigError(f"unknown suite {str(suite)!r}: no experiments/suites/{suite}.toml "
                      f"(suites: {', '.join(known) or 'none'}); or pass the path of a suite TOML")


def read_suite_file(path: Path) -> SuiteFile:
    """The suite file as typed sections; every error starts with the file's path and names the
    dotted suite key (`pairs[0].methods`)."""
    where = str(path)
    try:
        raw = read_toml(path)
    except ConfigError as e:
        raise ConfigError(str(e).replace("config file", "suite file", 1)) from None
    try:
        entry = build(SuiteFile, raw, "")
    except ConfigError as e:
        text = str(e).replace("config key", "suite key").replace("keys of 'config'", "keys of the suite file")
        raise ConfigError(f"{where}: {text}") from None
    check_values(entry, where)
    return entry


def check_values(entry: SuiteFile, where: str) -> None:
    """What the types cannot say: non-empty lists, positive budgets, percentages."""
    non_empty(entry.seeds, where, "seeds")
    if entry.reference not in METHODS:
        raise ConfigError(f"{where}: suite key 'reference': {METHODS.unknown_message(entry.reference)}")
    for i, seconds in enumerate(entry.budgets):
        if not (seconds > 0 and math.isfinite(seconds)):
            raise ConfigError(f"{where}: suite key 'budgets[{i}]' must be a number of seconds > 0 (got {seconds:g})")
    for i, percent in enumerate(entry.time_to):
        if not 0 < percent <= 100:
            raise ConfigError(f"{where}: suite key 'time_to[{i}]' must be an accuracy in (0, 100] % (got {percent:g})")
    for i, pair in enumerate(entry.pairs):
        for required in REQUIRED_PAIR_KEYS:
            if not getattr(pair, required):
                raise ConfigError(f"{where}: pairs[{i}] needs '{required}'")
        if pair.seeds is not None:
            non_empty(pair.seeds, where, f"pairs[{i}].seeds")


def non_empty(items: list[Any], where: str, key: str) -> None:
    if not items:
        raise ConfigError(f"{where}: suite key {key!r} must be a non-empty list")


def flatten(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides written as `{"trainer.steps" = 10}` or as nested tables, as dotted keys."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(overrides, "")
    return flat


def load_suite(suite: str | Path, data_root: str | None = None) -> Suite:
    """Read and check a suite and every config it names, before anything runs: a typo fails in a
    second, not after the first hour of the suite."""
    path = find_suite(suite)
    where = str(path)
    entry = read_suite_file(path)
    base = path.parent
    common = flatten(entry.overrides)
    if data_root:
        common["data.root"] = data_root

    teachers: dict[str, TeacherSpec] = {}
    for name, teacher in entry.teachers.items():
        key = f"teachers.{name}"
        if not teacher.config:
            raise ConfigError(f"{where}: {key} needs 'config' (a teacher config file)")
        config_path = (base / teacher.config).resolve()
        if not config_path.is_file():
            raise ConfigError(f"{where}: {key}.config not found: {config_path}")
        cfg = load_config(config_path, {**common, **flatten(teacher.overrides)}, where, key)
        if not cfg.teacher.checkpoint:
            raise ConfigError(f"{where}: {key}: teacher config {config_path} must set teacher.checkpoint "
                              f"(where the bench saves the teacher and later finds it again)")
        same_folder = next((t for t in teachers if slug(t) == slug(name)), None)
        if same_folder is not None:
            raise ConfigError(f"{where}: teachers {same_folder!r} and {name!r} would share the run folder "
                              f"runs/teachers/{slug(name)}; rename one of them")
        teachers[name] = TeacherSpec(name, cfg, config_path)

    if not entry.pairs:
        raise ConfigError(f"{where}: a suite needs at least one [[pairs]] table")
    pairs: list[PairSpec] = []
    runs_by_pair: list[list[RunSpec]] = []
    for i, pair in enumerate(entry.pairs):
        key = f"pairs[{i}]"
        if pair.name in {p.name for p in pairs}:
            raise ConfigError(f"{where}: {key}.name: two pairs are named {pair.name!r}; names must differ "
                              f"(they name run folders)")
        same_folder = next((p.name for p in pairs if slug(p.name) == slug(pair.name)), None)
        if same_folder is not None:
            raise ConfigError(f"{where}: {key}.name: pairs {same_folder!r} and {pair.name!r} would share the run "
                              f"folder runs/{slug(pair.name)}; rename one of them")
        if pair.teacher not in teachers:
            raise ConfigError(f"{where}: {key}.teacher = {pair.teacher!r} is not a [teachers] entry "
                              f"(teachers: {', '.join(teachers) or 'none'})")
        if "{method}" not in pair.configs:
            raise ConfigError(f"{where}: {key}.configs must contain {{method}}, "
                              f"e.g. '../configs/digits/{{method}}.toml'")
        for j, method in enumerate(pair.methods):
            if method not in METHODS:
                raise ConfigError(f"{where}: {key}.methods[{j}]: {METHODS.unknown_message(method)}")
        if len(set(pair.methods)) != len(pair.methods):
            twice = next(m for m in pair.methods if pair.methods.count(m) > 1)
            raise ConfigError(f"{where}: {key}.methods lists {twice!r} twice")
        for method in pair.method_overrides:
            if method not in pair.methods:
                raise ConfigError(f"{where}: {key}.method_overrides.{method}: {method!r} is not in this pair's methods")
        seeds = pair.seeds if pair.seeds is not None else entry.seeds
        teacher_spec = teachers[pair.teacher]
        pair_overrides = flatten(pair.overrides)
        runs = []
        for j, method in enumerate(pair.methods):
            config_path = (base / pair.configs.format(method=method)).resolve()
            if not config_path.is_file():
                raise ConfigError(f"{where}: {key}.configs: config for method {method!r} not found: {config_path}")
            overrides = {**common, **pair_overrides, **flatten(pair.method_overrides.get(method, {})),
                         "teacher.checkpoint": str(teacher_spec.checkpoint)}
            for seed in seeds:
                cfg = load_config(config_path, {**overrides, "trainer.seed": seed}, where,
                                  f"{key}.methods[{j}] ({method}, seed {seed})")
                if cfg.method.name != method:
                    raise ConfigError(f"{where}: {key}.methods[{j}]: {config_path} sets method.name = "
                                      f"{cfg.method.name!r}, not {method!r}")
                if cfg.data.name != teacher_spec.config.data.name:
                    raise ConfigError(f"{where}: {key}.methods[{j}]: {config_path} uses data set {cfg.data.name!r} "
                                      f"but teacher {pair.teacher!r} is trained on {teacher_spec.config.data.name!r}")
                runs.append(RunSpec(pair.name, method, seed, pair.teacher, cfg, config_path))
        pairs.append(PairSpec(pair.name, pair.teacher, list(pair.methods), list(seeds)))
        runs_by_pair.append(runs)

    seed_order = sorted({r.seed for runs in runs_by_pair for r in runs})
    ordered = [r for seed in seed_order for runs in runs_by_pair for r in runs if r.seed == seed]
    return Suite(path.stem, path, entry.description, teachers, pairs, ordered, reference=entry.reference,
                 budgets=list(entry.budgets), time_to=list(entry.time_to))


def load_config(path: Path, overrides: dict[str, Any], where: str, key: str) -> Config:
    try:
        return load(path, overrides)
    except ConfigError as e:
        raise ConfigError(f"{where}: {key}: {path}: {e}") from None


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("→", " to ")).strip("_") or "run"


def display_path(path: Path) -> str:
    """A config path as the reader of results.md would type it (relative to the checkout)."""
    for base in (Path.cwd(), REPO_ROOT):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)
