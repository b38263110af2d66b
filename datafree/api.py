"""The Python API: `train_teacher()`, `distill()`, `resume()`, `evaluate()`. The CLI calls these.

Each run gets a run directory holding its resolved `config.toml`, TensorBoard events, resumable
checkpoints (`checkpoints/step_*.pt`), the final model (`teacher.pt` or `student.pt`) and
`metrics.json` (the final figures, and what the teacher, student and inputs really were).
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from datafree import checkpoint
from datafree.adapt import adapt, adapt_student
from datafree.build import precision_warning
from datafree.config import Config, ModelConfig, from_dict, parse_overrides, read_toml, to_toml, with_choices
from datafree.data import Dataset, eval_batches, load_dataset
from datafree.distributed import Dist, barrier, broadcast_object, init_from_env
from datafree.errors import CheckpointError, ConfigError
from datafree.files import write_text
from datafree.inputs import classes_of, load_inputs, with_inputs_of
from datafree.methods import METHODS
from datafree.models import check_model_io, count_parameters
from datafree.monitor import Monitor
from datafree.rundir import RunDirectory, default_run_dir
from datafree.sources import Network, call_factory, from_file, student_network, teacher_network
from datafree.spec import InputSpec
from datafree.trainer import Trainer
from datafree.userdata import check_test_data, read_test_data


@dataclass
class Result:
    model: nn.Module  # the trained teacher or student
    metrics: dict[str, float]
    run_dir: Path | None
    checkpoint: Path | None  # the saved model file
    already_finished: bool = False  # resume() of a run that had finished: nothing was trained again
    # Every evaluation of the run: {"step", "seconds", "student_steps", <the figures>} (accuracy against time)
    evaluations: list[dict[str, float]] = field(default_factory=list)


def train_teacher(model: str | None = None, data: str | None = None, *, steps: int | None = None,
                  seed: int | None = None, output: str | Path | None = None, run_dir: str | Path | None = None,
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
            input_shape: tuple[int, ...] | list[int] | None = None, num_classes: int | None = None,
            mean: tuple[float, ...] | list[float] | None = None, std: tuple[float, ...] | list[float] | None = None,
            test_data: Any = None, data: str | InputSpec | None = None, steps: int | None = None,
            seed: int | None = None, run_dir: str | Path | None = None, config: Config | str | Path | None = None,
            overrides: dict[str, Any] | list[str] | None = None, quiet: bool = False) -> Result:
    """Distill `teacher` into `student` with `method` (default: the config's, else `ours`).

    - `teacher`: an nn.Module, or a file: a datafree checkpoint, a TorchScript archive, or the
      weights of `overrides={"teacher.factory": "pkg.mod:fn"}`.
    - `student`: a registered model name (default digits_cnn_half), or an nn.Module.
    - The inputs: `input_shape` (with `mean`/`std` when the teacher normalises its inputs, and
      `num_classes` when you want it checked; it is read from the teacher otherwise), or an
      `InputSpec` as `data`, or a registered data set name as `data`. A datafree teacher
      checkpoint records its inputs, so none of these are needed with one.
    - `test_data` (optional, with your own inputs): `(x, y)` or `(x,)` tensors/arrays, a Dataset,
      a DataLoader, a .npz file or an image folder. Without labelled test data the run reports
      the student's agreement with the teacher (on unlabelled inputs and on held-out synthetic
      samples) instead of accuracy.
    """
    teacher_module = teacher if isinstance(teacher, nn.Module) else None
    student_module = student if isinstance(student, nn.Module) else None
    if isinstance(data, InputSpec):
        input_shape, num_classes = data.input_shape, data.num_classes if num_classes is None else num_classes
        mean, std = (data.mean, data.std) if mean is None else (mean, std)
        data = None
    elif data is not None and not isinstance(data, str):
        raise ConfigError(f"data= takes a registered data set name or an InputSpec (got {type(data).__name__}); "
                          f"pass your own test inputs as test_data=")
    file_test_data = isinstance(test_data, (str, Path))
    if config is None:
        student, method = student if student is not None else "digits_cnn_half", method or "ours"
    arguments: dict[str, Any] = {
        "teacher.checkpoint": None if teacher_module is not None else str(teacher), "method.name": method,
        "student.name": None if student_module is not None or student is None else student, "data.name": data,
        "trainer.steps": steps, "trainer.seed": seed, "run.dir": str(run_dir) if run_dir else None,
        "data.test_data": str(test_data) if file_test_data else None}
    if input_shape is not None:
        arguments.update({"data.input_shape": [int(d) for d in input_shape], "data.num_classes": num_classes or 0,
                          "data.mean": list(mean or ()), "data.std": list(std or ())})
    elif num_classes is not None or mean is not None or std is not None:
        raise ConfigError("num_classes, mean and std describe your own inputs: give input_shape too")
    if student_module is not None:
        arguments["student.name"] = ""
    cfg = make_config(config, overrides, arguments)
    return run("distill", cfg, teacher_module=teacher_module, student_module=student_module,
               test_data=None if file_test_data else test_data, quiet=quiet)


def resume(run_dir: str | Path, quiet: bool = False, teacher: nn.Module | None = None,
           student: nn.Module | None = None, test_data: Any = None) -> Result:
    """Continue a stopped run exactly where its latest checkpoint left it. A run that had already
    finished is not trained again: its saved model and metrics are returned (already_finished).
    A run started with Python modules or in-memory test data needs them passed again."""
    run_dir = Path(run_dir)
    state = checkpoint.load_latest_run(run_dir)
    cfg = from_dict(state["config"])
    command = state["notes"].get("command", "distill")
    if state["step"] >= cfg.trainer.steps:
        model_path, metrics_path = final_model_path(command, cfg, run_dir), run_dir / "metrics.json"
        record = read_metrics(metrics_path)
        if model_path.is_file() and record is not None:  # else it stopped between its last checkpoint and these
            if student is None and cfg.student.factory:  # resuming a run folder trusts its config (README)
                spec = InputSpec.from_dict(state["notes"]["inputs"])
                student = call_factory(cfg.student.factory, cfg.student.args, spec)
            model = checkpoint.load_model(model_path, student).model
            return Result(model, numbers(record), run_dir, model_path, already_finished=True,
                          evaluations=list(record.get("evaluations", [])))
    return run(command, cfg, teacher_module=teacher, student_module=student, test_data=test_data, resume_state=state,
               quiet=quiet, run_dir=run_dir)


def evaluate(model: str | Path | nn.Module, data: str | None = None, *, test_data: Any = None,
             input_shape: tuple[int, ...] | None = None, mean: tuple[float, ...] | None = None,
             std: tuple[float, ...] | None = None, factory: str | None = None, data_root: str = "data",
             batch_size: int = 1024) -> dict[str, float]:
    """Test accuracy (%) of a model on a registered data set's test split (`data`; default: the one
    its checkpoint records) or on your own labelled `test_data`. `model` is an nn.Module, a
    datafree checkpoint, a TorchScript archive, or the weights of `factory` ("pkg.mod:fn")."""
    if isinstance(model, nn.Module):
        network = Network(model, "module", type(model).__qualname__)
    else:
        section = ModelConfig(name="", factory=factory or "")
        section.check("model")
        network = from_file(model, section, "model", None)
    spec = network.spec
    if input_shape is not None:  # mean/std not given: those the model records, if any
        spec = InputSpec(tuple(input_shape), spec.num_classes if spec else None,
                         mean if mean is not None else spec.mean if spec else None,
                         std if std is not None else spec.std if spec else None)
    elif mean is not None or std is not None:
        raise ConfigError("mean and std describe your own inputs: give input_shape too")
    if test_data is not None:
        if data is not None:
            raise ConfigError("give either data (a registered data set) or test_data (your own), not both")
        if spec is None:
            raise ConfigError("the model does not record its inputs: give input_shape (--input-shape C,H,W or F), and "
                              "mean/std if it normalises them")
        split = read_test_data(test_data, spec)
        spec = spec.with_classes(spec.num_classes or classes_of(network, spec))
        check_test_data(split, spec)
    else:
        name = data or (spec.name.split(":")[0] if spec is not None else None)
        if name is None or name == "custom":
            raise ConfigError("the model records no registered data set; pass one (data=, --data) or labelled "
                              "test data (test_data=, --test-data)")
        size = {}
        if spec is not None and spec.is_image and spec.input_shape[1] == spec.input_shape[2]:
            # as the model was trained: a data set resized or converted to 1 or 3 channels
            size = {"image_size": spec.input_shape[1], "channels": spec.input_shape[0]}
        dataset = load_dataset(name, data_root, **size)
        spec, split = dataset.info, dataset.test
    if split.y is None:
        raise ConfigError("the test data has no labels, so there is no accuracy to measure; pass (x, y)")
    net = network.module
    check_model_io(net, network.label(), spec.num_classes, spec.input_shape)
    device = next(net.parameters(), torch.empty(0)).device
    net.eval()
    correct = 0
    with torch.no_grad():
        for x, y in eval_batches(split, spec, batch_size, device):
            correct += int((net(x).argmax(1) == y).sum())
    return {"accuracy": 100 * correct / len(split), "parameters": count_parameters(net), "samples": len(split)}


# ---------------------------------------------------------------------------------------------


def make_config(config: Config | str | Path | None, overrides: dict[str, Any] | list[str] | None,
                arguments: dict[str, Any]) -> Config:
    """Function arguments (None = not given) on top of `config` (a Config, or a TOML file whose
    method recipe is merged for the method finally chosen), then explicit overrides."""
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
        return from_dict(config.to_dict(), items, given=config.given)
    return from_dict(read_toml(config) if config is not None else {}, items)


def run(command: str, cfg: Config, teacher_module: nn.Module | None = None, student_module: nn.Module | None = None,
        test_data: Any = None, resume_state: dict[str, Any] | None = None, quiet: bool = False,
        run_dir: Path | None = None) -> Result:
    """Build everything a config describes, train, save and report. `run_dir` (resume only) is an
    existing run directory to continue in."""
    dist = init_from_env(cfg.trainer.device)
    seed_everything(cfg.trainer.seed)
    # The config as asked for, before the automatic choices below complete it (the bench recognises
    # a half-done run of a suite by it).
    requested = resume_state["notes"].get("requested_config") if resume_state else None
    notes: dict[str, Any] = {"command": command, "requested_config": requested or cfg.to_dict()}
    method = METHODS.get(cfg.method.name)
    if command == "train-teacher":
        teacher = None
        cfg = as_student_run(cfg)
    else:
        teacher = load_teacher(cfg, teacher_module, resume_state, notes)
        cfg = with_inputs_of(cfg, teacher)
    dataset = load_inputs(cfg, teacher, test_data)
    if method.data == "real" and dataset.train is None:
        raise ConfigError(f"method {method.name!r} trains on real labelled data, which your own inputs "
                          f"(data.input_shape) do not include: use a data-free method, or register your data set "
                          f"(datafree.register_dataset) and name it")
    if teacher is not None and teacher.spec is not None and cfg.data.name:
        check_teacher_data(cfg, teacher.spec, dataset.info)
    cfg, choices = adapt(cfg, dataset.info, teacher)
    student = student_network(cfg.student, dataset.info, student_module)
    cfg, student_choice = adapt_student(cfg, dataset.info, student.module) if command == "distill" else (cfg, None)
    choices = "; ".join(c for c in (choices, student_choice) if c) or None
    cfg = with_provenance(cfg, teacher, student)
    notes.update(inputs=dataset.info.to_dict(), student=student.provenance(),
                 **({"teacher": teacher.provenance()} if teacher is not None else {}))
    if choices and dist.is_main and not quiet:
        print(f"datafree: {choices}", file=sys.stderr)

    trainer = Trainer(cfg, dataset, student.module, teacher.module if teacher is not None else None, None, dist, notes)
    cfg = trainer.cfg  # with what building it chose (the generator's width)
    if dist.is_main and not quiet and (slow := precision_warning(cfg.trainer.precision, trainer.device)):
        print(f"datafree: {slow}", file=sys.stderr)
    if resume_state is not None:
        trainer.load_state_dict(resume_state)
    # Only now, with every input checked, does the run touch the disk: a refused run leaves nothing
    # behind, and --overwrite never clears an old run for a new one that cannot start.
    folder = open_run_directory(cfg, command, dist, student.label(), run_dir, teacher)  # rank 0 only
    trainer.run_dir = broadcast_object(folder.path if folder is not None else None, dist)
    if folder is not None:
        trainer.on_checkpoint = lambda path: checkpoint_saved(folder, trainer, path)
    description = f"{command} {cfg.method.name}" if command == "distill" else f"{command} {student.label()}"
    succeeded = False
    try:
        monitor = Monitor(trainer.run_dir if dist.is_main else None, cfg.trainer.steps, description,
                          console=dist.is_main and not quiet, start_step=trainer.step)
        try:
            if folder is not None:
                folder.record(write_text(folder.path / "config.toml", to_toml(cfg)), *monitor.files())
            trainer.fit(monitor)
            metrics = trainer.summary()
            saved = None
            if folder is not None:
                saved = save_final_model(command, cfg, folder.path, trainer, dataset, student.arch, metrics)
                record = {**metrics, **{k: notes[k] for k in ("teacher", "student", "inputs") if k in notes},
                          "evaluations": trainer.evaluations}
                if choices:
                    record["automatic_choices"] = choices
                folder.record(saved, write_text(folder.path / "metrics.json", json.dumps(record, indent=2) + "\n"))
                monitor.hparams(hparams_of(cfg, command), {f"final/{k}": float(v) for k, v in metrics.items()})
            barrier(dist)
            succeeded = True
        finally:
            monitor.close()
    finally:
        trainer.close()
        if folder is not None:
            folder.close(succeeded)
    return Result(trainer.student, metrics, trainer.run_dir, saved, evaluations=list(trainer.evaluations))


def open_run_directory(cfg: Config, command: str, dist: Dist, label: str, resumed: Path | None,
                       teacher: Network | None) -> RunDirectory | None:
    """Rank 0's locked run directory (the others write nothing)."""
    if not dist.is_main:
        return None
    if command == "train-teacher" and cfg.teacher.checkpoint and Path(cfg.teacher.checkpoint).exists() \
            and not cfg.run.overwrite and resumed is None:
        raise ConfigError(f"teacher checkpoint {cfg.teacher.checkpoint} already exists; pass --overwrite to replace it "
                          f"or choose another --out")
    root = resumed or (Path(cfg.run.dir) if cfg.run.dir else default_run_dir(cfg, command, label))
    protect = Path(cfg.teacher.checkpoint) if teacher is not None and cfg.teacher.checkpoint else None
    return RunDirectory(root, overwrite=cfg.run.overwrite, protect=protect, resume=resumed is not None)


def checkpoint_saved(folder: RunDirectory, trainer: Trainer, path: Path) -> None:
    """Record a run checkpoint; the first one of an overwriting run replaces the old run."""
    folder.forget(*[folder.path / name for name in list(folder.written) if not (folder.path / name).exists()])
    folder.record(path)
    if folder.staging:
        def move() -> Path:
            folder.swap()
            return folder.path

        trainer.reporter.monitor.relocate(move)
        folder.record(*trainer.reporter.monitor.files())
        trainer.run_dir = folder.path


def read_metrics(path: Path) -> dict[str, Any] | None:
    """A finished run's metrics.json, or None when it is missing or damaged (the run is then finished again)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The figures of a metrics.json, without its provenance tables."""
    return {k: v for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def as_student_run(cfg: Config) -> Config:
    """train-teacher trains the teacher architecture in the student's seat of the trainer."""
    seat = {f"student.{k}": v for k, v in cfg.to_dict()["teacher"].items()} | {"student.checkpoint": ""}
    return with_choices(cfg, seat)


def load_teacher(cfg: Config, module: nn.Module | None, resume_state: dict[str, Any] | None,
                 notes: dict[str, Any]) -> Network | None:
    if module is not None:
        return Network(module, "module", cfg.teacher.source or type(module).__qualname__)
    if not cfg.teacher.checkpoint and METHODS.get(cfg.method.name).name == "scratch":
        return None
    d = cfg.data  # what a teacher factory may be told: the shape and class count the config gives
    hint = InputSpec(tuple(d.input_shape), d.num_classes or None) if d.input_shape else None
    if cfg.teacher.factory and d.name:
        hint = load_dataset(d.name, d.root, d.download, d.image_size, d.channels).info
    try:
        network = teacher_network(cfg.teacher, hint)
    except CheckpointError as e:
        if resume_state is None or Path(cfg.teacher.checkpoint).exists():
            raise
        raise CheckpointError(f"{e}; the run being resumed reads its teacher from there (its teacher.checkpoint), "
                              f"so resume it from the folder it was started in") from None
    notes["teacher_digest"] = checkpoint.file_digest(cfg.teacher.checkpoint)
    if resume_state is not None and resume_state["notes"].get("teacher_digest") not in (None, notes["teacher_digest"]):
        raise ConfigError(f"teacher file {cfg.teacher.checkpoint} changed since this run started, so resuming "
                          "would not continue the same run; put the original file back (or start a new run with "
                          "this teacher)")
    return network


def check_teacher_data(cfg: Config, t: InputSpec, d: InputSpec) -> None:
    if (t.num_classes, tuple(t.input_shape)) == (d.num_classes, tuple(d.input_shape)):
        return
    registered = t.name.split(":")[0]
    if registered == cfg.data.name and t.is_image:  # the same data set, converted otherwise
        fix = (f"set data.channels = {t.input_shape[0]} and data.image_size = {t.input_shape[1]} as for the teacher "
               f"(or name no data set: the teacher's is used)")
    else:
        fix = f"pass --data {registered}"
    raise ConfigError(f"teacher {cfg.teacher.checkpoint} was trained on {t.name} ({t.num_classes} classes, inputs "
                      f"{tuple(t.input_shape)}) but data set {d.name} has {d.num_classes} classes, inputs "
                      f"{tuple(d.input_shape)}; {fix}")


def with_provenance(cfg: Config, teacher: Network | None, student: Network) -> Config:
    """Record in the config what the networks really were: a Python module under its class name and
    size, never a registered name it did not use."""
    changes: dict[str, Any] = {}
    if teacher is not None:  # (train-teacher has none: its model sits in the student's seat)
        changes["teacher.name"] = (teacher.arch or {}).get("name", "")
    for section, network in (("teacher", teacher), ("student", student)):
        if network is not None and network.kind != "registered":
            p = network.provenance()
            changes[f"{section}.source"] = f"{p['kind']} {p['class']} ({p['parameters']:,} parameters)" + (
                f" from {p['source']}" if p["kind"] != "module" else "")
    if student.kind == "module":
        changes["student.name"] = ""
    if not changes:
        return cfg
    return with_choices(cfg, changes)


def final_model_path(command: str, cfg: Config, run_dir: Path) -> Path:
    if command == "train-teacher":
        return Path(cfg.teacher.checkpoint) if cfg.teacher.checkpoint else run_dir / "teacher.pt"
    return run_dir / "student.pt"


def save_final_model(command: str, cfg: Config, run_dir: Path, trainer: Trainer, dataset: Dataset,
                     arch: dict[str, Any] | None, metrics: dict[str, float]) -> Path:
    keys = {"student_accuracy": "test_accuracy", "teacher_accuracy": "teacher_accuracy", "agreement": "agreement"}
    if command == "train-teacher":
        keys = {"student_accuracy": "test_accuracy"}
    model_metrics = {new: metrics[old] for old, new in keys.items() if old in metrics}
    return checkpoint.save_model(trainer.student, dataset.info, final_model_path(command, cfg, run_dir), arch,
                                 model_metrics)


def hparams_of(cfg: Config, command: str) -> dict[str, Any]:
    return {"command": command, "data": cfg.data.name or "custom", "method": cfg.method.name,
            "student": cfg.student.name or cfg.student.factory or cfg.student.source,
            "teacher": cfg.teacher.checkpoint or cfg.teacher.name, "steps": cfg.trainer.steps,
            "batch_size": cfg.trainer.batch_size, "seed": cfg.trainer.seed, "lr": cfg.student.optim.lr,
            "temperature": cfg.method.temperature, "g_steps": cfg.trainer.g_steps, "s_steps": cfg.trainer.s_steps}


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
