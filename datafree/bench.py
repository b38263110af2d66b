"""`datafree bench SUITE`: train the suite's teachers, run its methods × pairs × seeds, and write
`results.json`, `results.md` (a table per pair) and `accuracy_vs_time.png` (logged to TensorBoard too).

A suite is a TOML file, `experiments/suites/<name>.toml` or any path; the config paths in it are
relative to the suite file:

    description = "what this suite measures"
    seeds = [0, 1, 2]                              # every pair's seeds unless the pair names its own
    overrides = { "trainer.threads" = 2 }          # optional: dotted config keys for every run

    [teachers.digits_cnn]                          # trained first, once; reused while its checkpoint exists
    config = "../configs/digits/teacher.toml"      # must set teacher.checkpoint (where it is saved)
    overrides = {}                                 # optional

    [[pairs]]
    name = "digits_cnn-digits_cnn_half"            # table heading and run folder
    teacher = "digits_cnn"                         # a key of [teachers]; its checkpoint is every run's teacher
    configs = "../configs/digits/{method}.toml"    # one distillation config per method
    methods = ["scratch", "kd", "dfad", "ours"]
    seeds = [0, 1]                                 # optional
    overrides = {}                                 # optional: every run of this pair
    [pairs.method_overrides.dfad]                  # optional: one method of this pair
    "trainer.steps" = 300

Results go to `experiments/results/<suite>/` (or `out`); run directories and TensorBoard files to
its `runs/` (git-ignored): `tensorboard --logdir experiments/results/<suite>/runs` shows every run
in the HPARAMS tab and the suite's plot under IMAGES.

Resuming: `results.json` is rewritten after every run, and each record carries a fingerprint of
the run's resolved config and of its teacher file. Invoked again, the bench skips every run whose
record has the same fingerprint, runs again those whose config (or teacher) changed since, and a
run that was stopped half way continues exactly from its last checkpoint when its config is
unchanged (otherwise it restarts). The fingerprint includes the loss weights the method registers
in datafree/methods/, so editing a recipe there re-runs that method too. Settings that cannot change a result (logging, evaluation and
checkpoint frequency, device, data root, the published figures) are left out of the fingerprint.
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from datafree import api, checkpoint
from datafree.config import Config, from_dict, load, read_toml
from datafree.errors import CheckpointError, ConfigError, DivergenceError
from datafree.methods import METHODS
from datafree.models import count_parameters

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_FORMAT = "datafree-bench-1"
PLOT_FILE = "accuracy_vs_time.png"
# Config keys that only change how a run reports or where it reads from, never its result.
NOT_FINGERPRINTED = {"run": None, "published": None,
                     "data": ("root", "download", "test_batch_size"),
                     "trainer": ("eval_every", "log_every", "image_every", "checkpoint_every", "keep_checkpoints",
                                 "device", "threads")}


# ---------------------------------------------------------------------------------------------
# The suite file


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


def load_suite(suite: str | Path, data_root: str | None = None) -> Suite:
    """Read and check a suite and every config it names, before anything runs: a typo fails in a
    second, not after the first hour of the suite."""
    path = find_suite(suite)
    raw = read_toml(path)
    where = str(path)
    check_keys(raw, {"description", "seeds", "overrides", "teachers", "pairs"}, where, "")
    base = path.parent
    common = dotted_table(raw.get("overrides", {}), where, "overrides")
    if data_root:
        common["data.root"] = data_root
    default_seeds = int_list(raw.get("seeds", [0]), where, "seeds")

    teachers: dict[str, TeacherSpec] = {}
    for name, entry in table(raw.get("teachers", {}), where, "teachers").items():
        key = f"teachers.{name}"
        check_keys(entry, {"config", "overrides"}, where, key)
        config_path = config_file(base, entry, where, key)
        overrides = {**common, **dotted_table(entry.get("overrides", {}), where, f"{key}.overrides")}
        cfg = load_config(config_path, overrides, where)
        if not cfg.teacher.checkpoint:
            raise ConfigError(f"{config_path}: teacher config of suite key {key!r} must set teacher.checkpoint "
                              f"(where the bench saves the teacher and later finds it again)")
        same_folder = next((t for t in teachers if slug(t) == slug(name)), None)
        if same_folder is not None:
            raise ConfigError(f"{where}: teachers {same_folder!r} and {name!r} would share the run folder "
                              f"runs/teachers/{slug(name)}; rename one of them")
        teachers[name] = TeacherSpec(name, cfg, config_path)

    pairs_raw = raw.get("pairs", [])
    if not isinstance(pairs_raw, list) or not pairs_raw:
        raise ConfigError(f"{where}: a suite needs at least one [[pairs]] table")
    pairs, runs_by_pair = [], []
    for i, entry in enumerate(pairs_raw):
        key = f"pairs[{i}]"
        entry = table(entry, where, key)
        check_keys(entry, {"name", "teacher", "configs", "methods", "seeds", "overrides", "method_overrides"}, where, key)
        for required in ("name", "teacher", "configs", "methods"):
            if required not in entry:
                raise ConfigError(f"{where}: {key} needs '{required}'")
        name = string(entry["name"], where, f"{key}.name")
        if name in {p.name for p in pairs}:
            raise ConfigError(f"{where}: two pairs are named {name!r}; names must differ (they name run folders)")
        same_folder = next((p.name for p in pairs if slug(p.name) == slug(name)), None)
        if same_folder is not None:
            raise ConfigError(f"{where}: pairs {same_folder!r} and {name!r} would share the run folder "
                              f"runs/{slug(name)}; rename one of them")
        teacher = string(entry["teacher"], where, f"{key}.teacher")
        if teacher not in teachers:
            raise ConfigError(f"{where}: {key}.teacher = {teacher!r} is not a [teachers] entry "
                              f"(teachers: {', '.join(teachers) or 'none'})")
        pattern = string(entry["configs"], where, f"{key}.configs")
        if "{method}" not in pattern:
            raise ConfigError(f"{where}: {key}.configs must contain {{method}}, e.g. '../configs/digits/{{method}}.toml'")
        methods = [string(m, where, f"{key}.methods") for m in list_of(entry["methods"], where, f"{key}.methods")]
        for method in methods:
            if method not in METHODS:
                raise ConfigError(f"{where}: {key}.methods: {METHODS.unknown_message(method)}")
        seeds = int_list(entry.get("seeds", default_seeds), where, f"{key}.seeds")
        pair_overrides = dotted_table(entry.get("overrides", {}), where, f"{key}.overrides")
        per_method = table(entry.get("method_overrides", {}), where, f"{key}.method_overrides")
        for method in per_method:
            if method not in methods:
                raise ConfigError(f"{where}: {key}.method_overrides.{method}: {method!r} is not in this pair's methods")
        teacher_spec = teachers[teacher]
        runs = []
        for method in methods:
            config_path = (base / pattern.format(method=method)).resolve()
            if not config_path.is_file():
                raise ConfigError(f"{where}: {key}: config for method {method!r} not found: {config_path}")
            overrides = {**common, **pair_overrides,
                         **dotted_table(per_method.get(method, {}), where, f"{key}.method_overrides.{method}"),
                         "teacher.checkpoint": str(teacher_spec.checkpoint)}
            for seed in seeds:
                cfg = load_config(config_path, {**overrides, "trainer.seed": seed}, where)
                if cfg.method.name != method:
                    raise ConfigError(f"{config_path} sets method.name = {cfg.method.name!r} but suite {key} lists it "
                                      f"as method {method!r}")
                if cfg.data.name != teacher_spec.config.data.name:
                    raise ConfigError(f"{config_path} uses data set {cfg.data.name!r} but teacher {teacher!r} is trained "
                                      f"on {teacher_spec.config.data.name!r}")
                runs.append(RunSpec(name, method, seed, teacher, cfg, config_path))
        pairs.append(PairSpec(name, teacher, methods, seeds))
        runs_by_pair.append(runs)

    seed_order = sorted({r.seed for runs in runs_by_pair for r in runs})
    ordered = [r for seed in seed_order for runs in runs_by_pair for r in runs if r.seed == seed]
    return Suite(path.stem, path, str(raw.get("description", "")), teachers, pairs, ordered)


def load_config(path: Path, overrides: dict[str, Any], where: str) -> Config:
    try:
        return load(path, overrides)
    except ConfigError as e:
        raise ConfigError(f"{path} (in suite {where}): {e}") from None


def config_file(base: Path, entry: dict[str, Any], where: str, key: str) -> Path:
    if "config" not in entry:
        raise ConfigError(f"{where}: {key} needs 'config' (a teacher config file)")
    path = (base / string(entry["config"], where, f"{key}.config")).resolve()
    if not path.is_file():
        raise ConfigError(f"{where}: {key}.config not found: {path}")
    return path


def check_keys(raw: dict[str, Any], allowed: set[str], where: str, key: str) -> None:
    for name in raw:
        if name not in allowed:
            dotted = f"{key}.{name}" if key else name
            raise ConfigError(f"{where}: unknown suite key {dotted!r} (allowed here: {', '.join(sorted(allowed))})")


def table(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: suite key {key!r} must be a table")
    return value


def dotted_table(value: Any, where: str, key: str) -> dict[str, Any]:
    """Overrides: `{"trainer.steps" = 10}` or nested tables, flattened to dotted keys."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict) and v:
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(table(value, where, key), "")
    return flat


def list_of(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: suite key {key!r} must be a non-empty list")
    return value


def int_list(value: Any, where: str, key: str) -> list[int]:
    items = list_of(value, where, key)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in items):
        raise ConfigError(f"{where}: suite key {key!r} must be a list of integers (got {value!r})")
    return items


def string(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: suite key {key!r} must be a non-empty string (got {value!r})")
    return value


# ---------------------------------------------------------------------------------------------
# Running


def run_suite(suite: str | Path, out: str | Path | None = None, data_root: str | None = None,
              quiet: bool = False) -> dict[str, Any]:
    """Run (or finish) a suite; returns the content of results.json."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("datafree bench runs its runs one after another in one process; start it without torchrun")
    spec = load_suite(suite, data_root)
    out = Path(out) if out else Path("experiments/results") / spec.name
    say: Callable[[str], None] = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    results = read_results(out / "results.json", spec)

    say(f"bench {spec.name}: {len(spec.teachers)} teacher(s), {len(spec.runs)} runs; results in {out}/")
    digests: dict[str, str] = {}
    for teacher in spec.teachers.values():
        results["teachers"][teacher.name] = ensure_teacher(teacher, out, results["teachers"].get(teacher.name), quiet, say)
        digests[teacher.name] = results["teachers"][teacher.name]["digest"]
        write_outputs(out, spec, results, final=False)

    records = {(r["pair"], r["method"], r["seed"]): r for r in results["runs"]}
    todo = []
    for run in spec.runs:
        fp = fingerprint(run.config.to_dict(), digests[run.teacher])
        old = records.get((run.pair, run.method, run.seed))
        if old is not None and old.get("fingerprint") == fp:
            old.update(published_fields(run.config))  # published figures may be edited without re-running
            continue
        if old is not None:
            say(f"  {run.key}: its config or teacher changed since it was recorded; running it again")
        todo.append((run, fp))
    say(f"  {len(spec.runs) - len(todo)} runs already recorded, {len(todo)} to run")

    for i, (run, fp) in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] {run.key} ({run.config_path.name}) ...")
        record = execute(run, fp, out, quiet)
        records[(run.pair, run.method, run.seed)] = record
        results["runs"] = [records[k] for k in sorted(records, key=run_order(spec))]
        write_outputs(out, spec, results, final=False)
        if "error" in record:
            say(f"  failed: {record['error']}")
        else:
            say(f"  {record['accuracy']:.2f}% (teacher {record['teacher_accuracy']:.2f}%), {record['seconds']:.1f} s, "
                f"{record['student_steps']:,} student steps")
    results["runs"] = [records[k] for k in sorted(records, key=run_order(spec))]
    write_outputs(out, spec, results, final=True)
    say(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / PLOT_FILE}; "
        f"TensorBoard: tensorboard --logdir {out / 'runs'}")
    return results


def run_order(spec: Suite) -> Callable[[tuple[str, str, int]], tuple[int, int, int]]:
    """Records sorted as the suite lists pairs and methods, then by seed; unknown ones last."""
    pairs = {p.name: i for i, p in enumerate(spec.pairs)}
    methods = {(p.name, m): j for p in spec.pairs for j, m in enumerate(p.methods)}
    return lambda k: (pairs.get(k[0], len(pairs)), methods.get((k[0], k[1]), 1 << 20), k[2])


def ensure_teacher(teacher: TeacherSpec, out: Path, old: dict[str, Any] | None, quiet: bool,
                   say: Callable[[str], None]) -> dict[str, Any]:
    """Train the teacher unless its checkpoint exists; a stopped teacher run continues."""
    path = teacher.checkpoint
    if path.is_file():
        digest = checkpoint.file_digest(path)
        if old is not None and old.get("digest") == digest:
            return {**old, **published_fields(teacher.config)}
        ckpt = checkpoint.load_model(path)
        say(f"  teacher {teacher.name}: reusing {path}")
        return {"name": teacher.name, "model": teacher.config.teacher.name, "checkpoint": str(path), "digest": digest,
                "accuracy": ckpt.metrics.get("test_accuracy"), "seconds": None, "steps": None, "real_samples": None,
                "params": count_parameters(ckpt.model), "config": display_path(teacher.config_path),
                "trained_by_bench": False, **published_fields(teacher.config)}
    run_dir = out / "runs" / "teachers" / slug(teacher.name)
    say(f"  teacher {teacher.name}: training ({teacher.config.trainer.steps:,} steps) -> {path}")
    # The run's saved config is the one train-teacher trains with (the teacher in the student's seat).
    state = reusable_state(run_dir, fingerprint(api.as_student_run(teacher.config).to_dict(), ""))
    if state is not None:
        result = api.resume(run_dir, quiet=quiet)
    else:
        result = api.run("train-teacher", with_run_dir(teacher.config, run_dir), quiet=quiet)
    m = result.metrics
    say(f"  teacher {teacher.name}: {m['student_accuracy']:.2f}% in {m['seconds']:.1f} s")
    return {"name": teacher.name, "model": teacher.config.teacher.name, "checkpoint": str(path),
            "digest": checkpoint.file_digest(path), "accuracy": m["student_accuracy"], "seconds": m["seconds"],
            "steps": m["student_steps"], "real_samples": m["real_samples"], "params": m["student_parameters"],
            "config": display_path(teacher.config_path), "run_dir": str(run_dir), "trained_by_bench": True, **published_fields(teacher.config)}


def execute(run: RunSpec, fp: str, out: Path, quiet: bool) -> dict[str, Any]:
    """One distillation run in its own run directory: continued from its checkpoint when one with
    the same fingerprint is there, else started afresh (replacing what a changed config left)."""
    run_dir = out / "runs" / slug(run.pair) / f"{slug(run.method)}-s{run.seed}"
    state = reusable_state(run_dir, fp)
    record = {"pair": run.pair, "method": run.method, "seed": run.seed, "data": METHODS.get(run.method).data,
              "config": display_path(run.config_path), "run_dir": str(run_dir), "fingerprint": fp,
              "batch_size": run.config.trainer.batch_size, "steps": run.config.trainer.steps,
              **published_fields(run.config)}
    try:
        if state is not None:  # stopped half way, or finished but not yet recorded (then nothing is trained)
            metrics = api.resume(run_dir, quiet=quiet).metrics
        else:
            metrics = api.run("distill", with_run_dir(run.config, run_dir), quiet=quiet).metrics
    except DivergenceError as e:  # a diverging method is a result too; the suite goes on
        return {**record, "error": str(e), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    return {**record, "accuracy": metrics["student_accuracy"], "teacher_accuracy": metrics.get("teacher_accuracy"),
            "agreement": metrics.get("agreement"), "seconds": metrics["seconds"],
            "student_steps": metrics["student_steps"], "synthetic_samples": metrics["synthetic_samples"],
            "real_samples": metrics["real_samples"], "params": metrics["student_parameters"],
            "teacher_params": metrics.get("teacher_parameters"), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def with_run_dir(cfg: Config, run_dir: Path) -> Config:
    """The config with its run directory set; what an earlier attempt left there is replaced."""
    return from_dict(cfg.to_dict(), {"run.dir": str(run_dir), "run.overwrite": True})


def reusable_state(run_dir: Path, fp: str) -> dict[str, Any] | None:
    """The latest run checkpoint in `run_dir` if it belongs to a run with fingerprint `fp`."""
    if not run_dir.is_dir():
        return None
    try:
        state = checkpoint.load_latest_run(run_dir)
    except CheckpointError:
        return None
    notes = state.get("notes", {})
    if fingerprint(notes.get("requested_config", state["config"]), notes.get("teacher_digest", "")) != fp:
        return None
    return state


def fingerprint(config: dict[str, Any], teacher_digest: str) -> str:
    """A digest of everything that decides a run's result: its resolved config without the keys
    that only change reporting, the loss weights its method registers, and the teacher file's
    content in place of its path."""
    d = copy.deepcopy(config)
    d["method"]["weights"] = METHODS.get(d["method"]["name"]).weights(d["method"]["terms"])
    for section, keys in NOT_FINGERPRINTED.items():
        if keys is None:
            d.pop(section, None)
        else:
            for key in keys:
                d.get(section, {}).pop(key, None)
    d.setdefault("teacher", {})["checkpoint"] = teacher_digest
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def published_fields(cfg: Config) -> dict[str, Any]:
    p = cfg.published
    return {"published_accuracy": p.accuracy or None, "published_teacher_accuracy": p.teacher_accuracy or None,
            "published_hours": p.hours or None, "published_source": p.source}


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


# ---------------------------------------------------------------------------------------------
# results.json, results.md, the plot


def read_results(path: Path, spec: Suite) -> dict[str, Any]:
    fresh = {"format": RESULTS_FORMAT, "suite": spec.name, "teachers": {}, "runs": []}
    if not path.is_file():
        return fresh
    try:
        results = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e}); move it away to start the suite afresh") from None
    if not isinstance(results, dict) or results.get("format") != RESULTS_FORMAT:
        raise ConfigError(f"{path} is not a datafree bench results file; pass another --out or move it away")
    results.setdefault("teachers", {})
    results.setdefault("runs", [])
    return results


def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_outputs(out: Path, spec: Suite, results: dict[str, Any], final: bool) -> None:
    """results.json and results.md after every run; the plot too, and TensorBoard at the end."""
    out.mkdir(parents=True, exist_ok=True)
    results.update(suite=spec.name, suite_file=display_path(spec.path), description=spec.description,
                   machine=machine(), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_atomic(out / "results.json", json.dumps(results, indent=2) + "\n")
    markdown = results_markdown(spec, results)
    write_atomic(out / "results.md", markdown)
    image = plot_results(spec, results)
    image.save(out / f".{PLOT_FILE}.tmp", format="PNG")
    os.replace(out / f".{PLOT_FILE}.tmp", out / PLOT_FILE)
    if final:
        log_to_tensorboard(out / "runs" / "suite", image, markdown, step=sum("accuracy" in r for r in results["runs"]))


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class MethodSummary:
    method: str
    data: str  # real or synthetic
    n: int  # finished seeds
    failed: int
    accuracy: float
    accuracy_std: float
    agreement: float | None
    seconds: float
    student_steps: float
    synthetic_samples: float
    real_samples: float
    params: int | None
    published: str


def summarize(pair: PairSpec, results: dict[str, Any]) -> list[MethodSummary]:
    rows = []
    for method in pair.methods:
        records = [r for r in results["runs"] if r["pair"] == pair.name and r["method"] == method]
        done = [r for r in records if "accuracy" in r]
        if not records:
            continue
        mean = lambda key: statistics.fmean(r[key] for r in done) if done else float("nan")  # noqa: E731
        agreements = [r["agreement"] for r in done if r.get("agreement") is not None]
        rows.append(MethodSummary(
            method=method, data=records[0]["data"], n=len(done), failed=len(records) - len(done),
            accuracy=mean("accuracy"),
            accuracy_std=statistics.stdev(r["accuracy"] for r in done) if len(done) > 1 else 0.0,
            agreement=statistics.fmean(agreements) if agreements else None, seconds=mean("seconds"),
            student_steps=mean("student_steps"), synthetic_samples=mean("synthetic_samples"),
            real_samples=mean("real_samples"), params=done[0]["params"] if done else None,
            published=published_text(records[-1])))
    return rows


def published_text(record: dict[str, Any]) -> str:
    if not record.get("published_accuracy"):
        return "—"
    text = f"{record['published_accuracy']:.2f}"
    extra = []
    if record.get("published_teacher_accuracy"):
        extra.append(f"teacher {record['published_teacher_accuracy']:.2f}")
    if record.get("published_hours"):
        extra.append(f"{record['published_hours']:g} GPU-h")
    return f"{text} ({', '.join(extra)})" if extra else text


def count(value: float) -> str:
    return "—" if value != value else f"{value:,.0f}"  # NaN: no finished run


def results_markdown(spec: Suite, results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    finished = sum("accuracy" in r for r in results["runs"])
    lines = [f"# Benchmark suite `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    lines += [
        f"Produced by `datafree bench {spec.name}` (suite file `{display_path(spec.path)}`); "
        f"{finished} of {len(spec.runs)} runs finished, last updated {results.get('updated', '')}.",
        f"Machine: {m.get('processor', '?')}, {m.get('cpu_count', '?')} CPU cores, {m.get('torch_threads', '?')} torch "
        f"threads, GPU: {m.get('cuda') or 'none'}, torch {m.get('torch', '?')}.",
        "",
        "Student accuracy is the mean ± standard deviation over seeds of the final test accuracy. Wall-clock is the "
        "mean training time of one run (the training loop, evaluations included, start-up excluded); student steps "
        "are student updates; synthetic samples are the generated samples the run drew (generator and student "
        "batches); real samples are training images read. *Published* is the figure the method's config states "
        "(with its teacher and GPU-hours where given); it was measured with its own teacher and budget.",
        "",
    ]
    teacher_records = results.get("teachers", {})
    for pair in spec.pairs:
        teacher = spec.teachers[pair.teacher]
        t = teacher_records.get(pair.teacher, {})
        runs = [r for r in spec.runs if r.pair == pair.name]
        student = runs[0].config.student.name if runs else "?"
        lines += [f"## {pair.name}", "",
                  f"Data set `{teacher.config.data.name}`; teacher `{teacher.config.teacher.name}` "
                  f"({display_path(teacher.config_path)}), student `{student}`; seeds {', '.join(map(str, pair.seeds))}.",
                  "",
                  "| method | data | student acc. % | agreement % | wall-clock s | student steps | synthetic samples "
                  "| real samples | params | published % |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        t_acc = f"{t['accuracy']:.2f}" if t.get("accuracy") is not None else "—"
        t_sec = f"{t['seconds']:.1f}" if t.get("seconds") is not None else "—"
        t_steps = f"{t['steps']:,}" if t.get("steps") is not None else "—"
        t_real = f"{t['real_samples']:,}" if t.get("real_samples") is not None else "—"
        lines.append(f"| **teacher** `{teacher.config.teacher.name}` | real | {t_acc} | — | {t_sec} | {t_steps} | 0 | "
                     f"{t_real} | {t.get('params') or 0:,} | {published_text(t)} |")
        for row in summarize(pair, results):
            if row.n:
                acc = f"{row.accuracy:.2f} ± {row.accuracy_std:.2f}" if row.n > 1 else f"{row.accuracy:.2f}"
            else:
                acc = "—"
            notes = []
            if row.n < len(pair.seeds):
                notes.append(f"{row.n}/{len(pair.seeds)} seeds")
            if row.failed:
                notes.append(f"{row.failed} diverged")
            if notes:
                acc += f" ({', '.join(notes)})"
            agreement = f"{row.agreement:.2f}" if row.agreement is not None else "—"
            seconds = f"{row.seconds:.1f}" if row.n else "—"
            lines.append(f"| {row.method} | {row.data} | {acc} | {agreement} | {seconds} | {count(row.student_steps)} | "
                         f"{count(row.synthetic_samples)} | {count(row.real_samples)} | "
                         f"{row.params or 0:,} | {row.published} |")
        lines.append("")
    lines += [f"![accuracy against wall-clock]({PLOT_FILE})", ""]
    return "\n".join(lines)


def plot_results(spec: Suite, results: dict[str, Any]):
    """Mean accuracy (± std over seeds) against mean wall-clock, one point per method, a panel per pair."""
    from datafree.plot import Panel, Point, scatter_panels

    panels = []
    for pair in spec.pairs:
        points = [Point(row.method, row.seconds, row.accuracy, row.accuracy_std,
                        marker="square" if row.data == "real" else "circle")
                  for row in summarize(pair, results) if row.n]
        if not points:
            continue
        t = results.get("teachers", {}).get(pair.teacher, {})
        reference = ("teacher", t["accuracy"]) if t.get("accuracy") is not None else None
        n = max(len(pair.seeds), 1)
        panels.append(Panel(f"{pair.name}  (mean ± std over {n} seed{'s' if n > 1 else ''}; squares: real data)",
                            points, reference))
    return scatter_panels(panels)


def log_to_tensorboard(log_dir: Path, image, markdown: str, step: int) -> None:
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    try:
        writer.add_image("suite/accuracy_vs_wall_clock", np.asarray(image.convert("RGB")), step, dataformats="HWC")
        writer.add_text("suite/results", markdown, step)
    finally:
        writer.close()
