"""The Python API: `train_teacher()`, `distill()`, `resume()`, `evaluate()`. The CLI calls these.

Each run gets a run directory holding its resolved `config.toml`, TensorBoard events, resumable
checkpoints (`checkpoints/step_*.pt`), the final model (`teacher.pt` or `student.pt`) and
`metrics.json`.
"""
from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datafree import checkpoint
from datafree.config import Config, from_dict, to_toml
from datafree.data import Dataset, load_dataset
from datafree.distributed import Dist, barrier, init_from_env
from datafree.errors import CheckpointError, ConfigError
from datafree.methods import METHODS
from datafree.models import count_parameters, create_model
from datafree.monitor import Monitor
from datafree.trainer import Trainer

RUN_FILES = ("config.toml", "metrics.json", "student.pt", "teacher.pt")


@dataclass
class Result:
    model: nn.Module  # the trained teacher or student
    metrics: dict[str, float]
    run_dir: Path | None
    checkpoint: Path | None  # the saved model file
    already_finished: bool = False  # resume() of a run that had finished: nothing was trained again


def train_teacher(model: str | None = None, data: str | None = None, *, steps: int | None = None, seed: int | None = None,
                  output: str | Path | None = None, run_dir: str | Path | None = None,
                  config: Config | str | Path | None = None, overrides: dict[str, Any] | list[str] | None = None,
                  quiet: bool = False) -> Result:
    """Train a classifier on real labelled data (method `scratch`) and save it as a teacher checkpoint
    (at `output`, default `<run_dir>/teacher.pt`). Returns the model and its test accuracy. `model`
    and `data` default to the config's (a Config or a TOML path), else to digits_cnn on digits."""
    if config is None:
        model, data = model or "digits_cnn", data or "digits"
    cfg = make_config(config, overrides, {"teacher.name": model, "data.name": data, "method.name": "scratch",
                                          "trainer.steps": steps, "trainer.seed": seed,
                                          "teacher.checkpoint": str(output) if output else None,
                                          "run.dir": str(run_dir) if run_dir else None})
    return run("train-teacher", cfg, quiet=quiet)


def distill(teacher: str | Path | nn.Module, student: str | nn.Module | None = None, method: str | None = None, *,
            data: str | None = None, steps: int | None = None, seed: int | None = None,
            run_dir: str | Path | None = None, config: Config | str | Path | None = None,
            overrides: dict[str, Any] | list[str] | None = None, quiet: bool = False) -> Result:
    """Distill `teacher` (a checkpoint path or an nn.Module) into `student` (a registered model
    name or an nn.Module) with `method`. `student` and `method` default to the config's (a Config or
    a TOML path), else to digits_cnn_half and `ours`. `data` defaults to the config's, else to the
    teacher checkpoint's data set; it provides the input description and the test set (data-free
    methods never see its training split)."""
    teacher_module = teacher if isinstance(teacher, nn.Module) else None
    student_module = student if isinstance(student, nn.Module) else None
    if config is None:
        student, method = student or "digits_cnn_half", method or "ours"
        if data is None and teacher_module is None:
            data = teacher_data(teacher)
    cfg = make_config(config, overrides, {
        "teacher.checkpoint": None if teacher_module is not None else str(teacher), "method.name": method,
        "student.name": None if student_module is not None else student, "data.name": data,
        "trainer.steps": steps, "trainer.seed": seed, "run.dir": str(run_dir) if run_dir else None})
    return run("distill", cfg, teacher_module=teacher_module, student_module=student_module, quiet=quiet)


def resume(run_dir: str | Path, quiet: bool = False, teacher: nn.Module | None = None,
           student: nn.Module | None = None) -> Result:
    """Continue a stopped run exactly where its latest checkpoint left it. A run that had already
    finished is not trained again: its saved model and metrics are returned (already_finished)."""
    run_dir = Path(run_dir)
    state = checkpoint.load_latest_run(run_dir)
    cfg = from_dict(state["config"])
    command = state["notes"].get("command", "distill")
    if state["step"] >= cfg.trainer.steps:
        model_path, metrics_path = final_model_path(command, cfg, run_dir), run_dir / "metrics.json"
        if model_path.is_file() and metrics_path.is_file():  # else it stopped between its last checkpoint and these
            model = checkpoint.load_model(model_path, student).model
            return Result(model, json.loads(metrics_path.read_text()), run_dir, model_path, already_finished=True)
    return run(command, cfg, teacher_module=teacher, student_module=student, resume_state=state,
               quiet=quiet, run_dir=run_dir)


def evaluate(model: str | Path | nn.Module, data: str | None = None, data_root: str = "data",
             batch_size: int = 1024) -> dict[str, float]:
    """Test accuracy (%) of a model checkpoint (or module, with `data`) on its data set's test split."""
    from datafree.data import eval_batches

    if isinstance(model, nn.Module):
        if data is None:
            raise ConfigError("evaluate(module) needs data=<data set name>")
        net, dataset = model, load_dataset(data, data_root)
    else:
        ckpt = checkpoint.load_model(model)
        net, dataset = ckpt.model, load_dataset(data or ckpt.info.name.split(":")[0], data_root)
    device = next(net.parameters()).device
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in eval_batches(dataset.test, dataset.info, batch_size, device):
            correct += int((net(x).argmax(1) == y).sum())
    return {"accuracy": 100 * correct / len(dataset.test), "parameters": count_parameters(net)}


# ---------------------------------------------------------------------------------------------


def teacher_data(path: str | Path) -> str:
    """The data set a teacher checkpoint was trained on (distill's default data set)."""
    return checkpoint.load_model(path).info.name.split(":")[0]


def make_config(config: Config | str | Path | None, overrides: dict[str, Any] | list[str] | None,
                arguments: dict[str, Any]) -> Config:
    """Function arguments (None = not given) on top of `config` (a Config, or a TOML file whose
    method recipe is merged for the method finally chosen), then explicit overrides."""
    from datafree.config import parse_overrides, read_toml

    items = {k: v for k, v in arguments.items() if v is not None}
    items.update(parse_overrides(overrides) if isinstance(overrides, list) else (overrides or {}))
    if isinstance(config, Config):
        # A Config already holds its method's recipe values (step ratios, temperature, ...); they
        # cannot be told apart from settings chosen on purpose, so it cannot switch method.
        method = items.get("method.name", config.method.name)
        if method != config.method.name:
            raise ConfigError(f"the config given runs method {config.method.name!r}, not {method!r}, and holds that "
                              f"method's recipe values; pass the TOML file's path as config= (its recipe is then "
                              f"taken from {method!r}) or a Config loaded for {method!r}")
        return from_dict(config.to_dict(), items)
    return from_dict(read_toml(config) if config is not None else {}, items)


def run(command: str, cfg: Config, teacher_module: nn.Module | None = None, student_module: nn.Module | None = None,
        resume_state: dict[str, Any] | None = None, quiet: bool = False, run_dir: Path | None = None) -> Result:
    """Build everything a config describes, train, save and report. `run_dir` (resume only) is an
    existing run directory to continue in."""
    dist = init_from_env(cfg.trainer.device)
    seed_everything(cfg.trainer.seed)
    dataset = load_dataset(cfg.data.name, cfg.data.root, cfg.data.download, cfg.data.image_size)
    notes: dict[str, Any] = {"command": command}
    if command == "train-teacher":
        teacher, arch_cfg = None, cfg.teacher
        student = student_module or build_model("teacher", cfg.teacher.name, cfg.teacher.args, dataset)
        cfg = as_student_run(cfg)
    else:
        teacher = teacher_module or load_teacher(cfg, dataset, notes, resume_state)
        arch_cfg = cfg.student
        student = student_module or build_model("student", cfg.student.name, cfg.student.args, dataset)
    arch = {"name": arch_cfg.name, "args": arch_cfg.args} if student_module is None else None

    trainer = Trainer(cfg, dataset, student, teacher, None, dist, notes)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    # Only now, with every input checked, does the run touch the disk: a refused run leaves nothing
    # behind, and --overwrite never clears an old run for a new one that cannot start.
    run_dir = run_dir or prepare_run_dir(cfg, command, dist)
    trainer.run_dir = run_dir
    description = f"{command} {cfg.method.name}" if command == "distill" else f"{command} {arch_cfg.name}"
    monitor = Monitor(run_dir if dist.is_main else None, cfg.trainer.steps, description,
                      console=dist.is_main and not quiet, start_step=trainer.step)
    if dist.is_main:
        (run_dir / "config.toml").write_text(to_toml(cfg))
    try:
        trainer.fit(monitor)
        metrics = trainer.summary()
        saved = None
        if dist.is_main:
            saved = save_final_model(command, cfg, run_dir, trainer, dataset, arch, metrics)
            (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
            monitor.hparams(hparams_of(cfg, command), {f"final/{k}": float(v) for k, v in metrics.items()})
        barrier(dist)
    finally:
        monitor.close()
    return Result(trainer.student, metrics, run_dir, saved)


def build_model(section: str, name: str, args: dict[str, Any], dataset: Dataset) -> nn.Module:
    """A registered model for this data set; its class count and input shape come from the data."""
    info = dataset.info
    for reserved, value in (("num_classes", info.num_classes), ("input_shape", tuple(info.input_shape))):
        if reserved in args:
            raise ConfigError(f"config key '{section}.args.{reserved}' cannot be set: it comes from data set "
                              f"{info.name} ({value}); remove it")
    return create_model(name, info.num_classes, info.input_shape, **args)


def as_student_run(cfg: Config) -> Config:
    """train-teacher trains the teacher architecture in the student's seat of the trainer."""
    raw = cfg.to_dict()
    raw["student"] = {k: v for k, v in raw["teacher"].items() if k != "checkpoint"}
    return from_dict(raw)


def load_teacher(cfg: Config, dataset: Dataset, notes: dict[str, Any], resume_state: dict[str, Any] | None) -> nn.Module | None:
    method = METHODS.get(cfg.method.name)
    if not cfg.teacher.checkpoint:
        if method.name == "scratch":
            return None
        raise ConfigError(f"method {method.name!r} needs a teacher: pass --teacher teacher.pt (train one with `datafree train-teacher`)")
    try:
        ckpt = checkpoint.load_model(cfg.teacher.checkpoint)
    except CheckpointError as e:
        if resume_state is None or Path(cfg.teacher.checkpoint).exists():
            raise
        raise CheckpointError(f"{e}; the run being resumed reads its teacher from there (its teacher.checkpoint), "
                              f"so resume it from the folder it was started in") from None
    t, d = ckpt.info, dataset.info
    if (t.num_classes, tuple(t.input_shape)) != (d.num_classes, tuple(d.input_shape)):
        raise ConfigError(f"teacher {cfg.teacher.checkpoint} was trained on {t.name} ({t.num_classes} classes, inputs "
                          f"{tuple(t.input_shape)}) but data set {d.name} has {d.num_classes} classes, inputs "
                          f"{tuple(d.input_shape)}; pass --data {t.name.split(':')[0]}")
    notes["teacher_digest"] = checkpoint.file_digest(cfg.teacher.checkpoint)
    if resume_state is not None and resume_state["notes"].get("teacher_digest") not in (None, notes["teacher_digest"]):
        raise ConfigError(f"teacher file {cfg.teacher.checkpoint} changed since this run started, so resuming would not "
                          f"continue the same run; put the original file back (or start a new run with this teacher)")
    return ckpt.model


def final_model_path(command: str, cfg: Config, run_dir: Path) -> Path:
    if command == "train-teacher":
        return Path(cfg.teacher.checkpoint) if cfg.teacher.checkpoint else run_dir / "teacher.pt"
    return run_dir / "student.pt"


def save_final_model(command: str, cfg: Config, run_dir: Path, trainer: Trainer, dataset: Dataset,
                     arch: dict[str, Any] | None, metrics: dict[str, float]) -> Path:
    if command == "train-teacher":
        model_metrics = {"test_accuracy": metrics["student_accuracy"]}
    else:
        model_metrics = {"test_accuracy": metrics["student_accuracy"], "teacher_accuracy": metrics.get("teacher_accuracy", 0.0),
                         "agreement": metrics.get("agreement", 0.0)}
    return checkpoint.save_model(trainer.student, dataset.info, final_model_path(command, cfg, run_dir), arch, model_metrics)


def prepare_run_dir(cfg: Config, command: str, dist: Dist) -> Path:
    """The run directory: refuse to reuse a non-empty one unless run.overwrite is set, and then
    remove only the files datafree itself writes there. train-teacher likewise refuses to replace
    an existing --out file without run.overwrite (and then replaces it only when done)."""
    if cfg.run.dir:
        run_dir = Path(cfg.run.dir)
    else:
        name = cfg.teacher.name if command == "train-teacher" else f"{cfg.method.name}-{cfg.student.name}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        run_dir = Path("runs") / f"{command}-{cfg.data.name}-{name}-s{cfg.trainer.seed}-{stamp}"
        suffix = 1
        while run_dir.exists():
            run_dir = run_dir.with_name(f"{run_dir.name.split('+')[0]}+{suffix}")
            suffix += 1
    if dist.is_main:
        if run_dir.exists() and not run_dir.is_dir():
            raise ConfigError(f"run directory {run_dir} is a file; choose another --run-dir")
        out = Path(cfg.teacher.checkpoint) if command == "train-teacher" and cfg.teacher.checkpoint else None
        if out is not None and out.exists() and not cfg.run.overwrite:
            raise ConfigError(f"teacher checkpoint {out} already exists; pass --overwrite to replace it or choose another --out")
        if run_dir.is_dir() and any(run_dir.iterdir()):
            if not cfg.run.overwrite:
                raise ConfigError(f"run directory {run_dir} already exists; pass --resume {run_dir} to continue it "
                                  f"or --overwrite to replace it")
            teacher = real_path(Path(cfg.teacher.checkpoint)) if command != "train-teacher" and cfg.teacher.checkpoint else None
            if teacher is not None and any(teacher == e or e in teacher.parents for e in map(real_path, run_files(run_dir))):
                raise ConfigError(f"--overwrite would delete {cfg.teacher.checkpoint}, the teacher this run reads; "
                                  f"copy it elsewhere first or choose another --run-dir")
            clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    barrier(dist)
    return run_dir


def run_files(run_dir: Path) -> list[Path]:
    """What datafree writes in a run directory (and --overwrite removes): never the whole of
    checkpoints/, only the run checkpoints in it."""
    found = [entry for entry in run_dir.iterdir() if entry.name in RUN_FILES or entry.name.startswith("events.out.tfevents")]
    # checkpoints/ may hold other files too (e.g. checkpoints/teachers/ with --run-dir .)
    return found + checkpoint.list_run_checkpoints(run_dir) + checkpoint.unfinished_writes(run_dir)


def real_path(path: Path) -> Path:
    """`path` with its folder resolved but not a final symbolic link (deleting a link spares its target)."""
    return path.absolute().parent.resolve() / path.name


def clear_run_dir(run_dir: Path) -> None:
    import shutil

    for entry in run_files(run_dir):
        shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    folder = run_dir / "checkpoints"
    if folder.is_dir() and not folder.is_symlink() and not any(folder.iterdir()):
        folder.rmdir()


def hparams_of(cfg: Config, command: str) -> dict[str, Any]:
    return {"command": command, "data": cfg.data.name, "method": cfg.method.name, "student": cfg.student.name,
            "teacher": cfg.teacher.checkpoint or cfg.teacher.name, "steps": cfg.trainer.steps,
            "batch_size": cfg.trainer.batch_size, "seed": cfg.trainer.seed, "lr": cfg.student.optim.lr,
            "temperature": cfg.method.temperature, "g_steps": cfg.trainer.g_steps, "s_steps": cfg.trainer.s_steps}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
