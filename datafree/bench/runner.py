"""Running a suite: its teachers first, then every run seed by seed; fingerprints decide which
recorded runs are still valid, and a run stopped half way continues from its checkpoint."""
from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datafree import api, checkpoint
from datafree.bench.memory import peak_memory_mb, release_memory, reset_peak_memory
from datafree.bench.report import PLOT_FILE, write_outputs
from datafree.bench.suite import (
    RunSpec,
    Suite,
    TeacherSpec,
    display_path,
    load_suite,
    slug,
)
from datafree.config import Config, from_dict
from datafree.errors import CheckpointError, ConfigError, DivergenceError
from datafree.methods import METHODS
from datafree.models import count_parameters

RESULTS_FORMAT = "datafree-bench-1"
# Config keys that only change how a run reports, where it reads from or how fast it runs, never its result.
NOT_FINGERPRINTED = {"run": None, "published": None,
                     "data": ("root", "download", "test_batch_size"),
                     "trainer": ("eval_every", "log_every", "image_every", "checkpoint_every", "keep_checkpoints",
                                 "device", "threads", "trim_teacher")}
# What results.json keeps of each evaluation of a run (accuracy against time).
EVALUATION_KEYS = ("step", "seconds", "student_steps", "student_accuracy", "agreement")


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
        results["teachers"][teacher.name] = ensure_teacher(teacher, out, results["teachers"].get(teacher.name),
                                                           quiet, say)
        digests[teacher.name] = results["teachers"][teacher.name]["digest"]
        write_outputs(out, spec, results, final=False)
        release_memory()

    records = {(r["pair"], r["method"], r["seed"]): r for r in results["runs"]}
    todo = []
    changed: dict[str, list[int]] = {}  # (pair /) method -> seeds recorded with another config or teacher
    for run in spec.runs:
        fp = fingerprint(run.config.to_dict(), digests[run.teacher])
        old = records.get((run.pair, run.method, run.seed))
        if old is not None and old.get("fingerprint") == fp:
            old.update(published_fields(run.config))  # published figures may be edited without re-running
            old.pop("superseded", None)
            continue
        if old is not None:  # kept until it is replaced, but out of the tables: its figures are another setting's
            old["superseded"] = True
            name = run.method if len(spec.pairs) == 1 else f"{run.pair} / {run.method}"
            changed.setdefault(name, []).append(run.seed)
        todo.append((run, fp))
    if changed:
        say("  config or teacher changed since recorded, running again: "
            + "; ".join(f"{name} (seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))})"
                        for name, seeds in changed.items()))
    say(f"  {len(spec.runs) - len(todo)} runs already recorded, {len(todo)} to run")

    for i, (run, fp) in enumerate(todo, 1):
        say(f"[{i}/{len(todo)}] {run.key} ({run.config_path.name}) ...")
        record = execute(run, fp, out, quiet)
        release_memory()
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
    # The run notes the config train-teacher was asked to run, before it puts the teacher in the student's seat.
    state = reusable_state(run_dir, fingerprint(teacher.config.to_dict(), ""))
    if state is not None:
        result = api.resume(run_dir, quiet=quiet)
    else:
        result = api.run("train-teacher", with_run_dir(teacher.config, run_dir), quiet=quiet)
    m = result.metrics
    say(f"  teacher {teacher.name}: {m['student_accuracy']:.2f}% in {m['seconds']:.1f} s")
    return {"name": teacher.name, "model": teacher.config.teacher.name, "checkpoint": str(path),
            "digest": checkpoint.file_digest(path), "accuracy": m["student_accuracy"], "seconds": m["seconds"],
            "steps": m["student_steps"], "real_samples": m["real_samples"], "params": m["student_parameters"],
            "config": display_path(teacher.config_path), "run_dir": str(run_dir), "trained_by_bench": True,
            **published_fields(teacher.config)}


def execute(run: RunSpec, fp: str, out: Path, quiet: bool) -> dict[str, Any]:
    """One distillation run in its own run directory: continued from its checkpoint when one with
    the same fingerprint is there, else started afresh (replacing what a changed config left)."""
    run_dir = out / "runs" / slug(run.pair) / f"{slug(run.method)}-s{run.seed}"
    state = reusable_state(run_dir, fp)
    record = {"pair": run.pair, "method": run.method, "seed": run.seed, "data": METHODS.get(run.method).data,
              "config": display_path(run.config_path), "run_dir": str(run_dir), "fingerprint": fp,
              "batch_size": run.config.trainer.batch_size, "steps": run.config.trainer.steps,
              **published_fields(run.config)}
    reset_peak_memory()
    try:
        if state is not None:  # stopped half way, or finished but not yet recorded (then nothing is trained)
            result = api.resume(run_dir, quiet=quiet)
        else:
            result = api.run("distill", with_run_dir(run.config, run_dir), quiet=quiet)
    except DivergenceError as e:  # a diverging method is a result too; the suite goes on
        return {**record, "error": str(e), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
    metrics = result.metrics
    return {**record, "accuracy": metrics["student_accuracy"], "teacher_accuracy": metrics.get("teacher_accuracy"),
            "agreement": metrics.get("agreement"), "seconds": metrics["seconds"],
            "student_steps": metrics["student_steps"], "synthetic_samples": metrics["synthetic_samples"],
            "real_samples": metrics["real_samples"], "params": metrics["student_parameters"],
            "teacher_params": metrics.get("teacher_parameters"), "evaluations": evaluation_curve(result.evaluations),
            "peak_memory_mb": peak_memory_mb(), "finished": time.strftime("%Y-%m-%d %H:%M:%S")}


def evaluation_curve(evaluations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's evaluations, with only the figures results.json keeps."""
    return [{k: e[k] for k in EVALUATION_KEYS if e.get(k) is not None} for e in evaluations]


def with_run_dir(cfg: Config, run_dir: Path) -> Config:
    """The config with its run directory set; what an earlier attempt left there is replaced."""
    return from_dict(cfg.to_dict(), {"run.dir": str(run_dir), "run.overwrite": True}, given=cfg.given)


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
