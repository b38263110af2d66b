"""What a run's inputs are: a registered data set, or an `InputSpec` the user wrote (with optional
test data of their own), completed from the teacher where it says more than the config does.

- A datafree teacher checkpoint records its inputs: with no data given, a run uses them.
- A TorchScript, factory or Python-module teacher records nothing: the run must be told
  (`input_shape=`, `--input-shape`) or given a registered data set.
- The class count, when not given, is read from the teacher's output.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from datafree.config import Config, with_choices
from datafree.data import DATASETS, Dataset, load_dataset
from datafree.errors import ConfigError
from datafree.models import dry_forward
from datafree.sources import Network
from datafree.spec import InputSpec
from datafree.userdata import check_test_data, read_test_data


def with_inputs_of(cfg: Config, teacher: Network | None) -> Config:
    """When the config names no inputs, take the teacher checkpoint's (or say what is missing). When
    it gives only their shape, that must be the shape the checkpoint records, whose normalisation
    is then used unless the config gives one; so must an image size or channel count it gives."""
    if "data.name" in cfg.given or teacher is None or (cfg.data.input_shape and teacher.spec is None):
        return cfg
    if cfg.data.input_shape:
        return with_recorded_normalisation(cfg, teacher.spec)
    if teacher.spec is None:
        raise ConfigError(f"the teacher ({teacher.kind} {teacher.source}) does not record what inputs it takes; "
                          f"give their shape (Python: input_shape=(3, 32, 32); CLI: --input-shape 3,32,32), with "
                          f"mean/std if it normalises them, or a registered data set (data=..., --data ...)")
    spec = teacher.spec
    registered = spec.name.split(":")[0]
    if registered in DATASETS and registered != "imagefolder":
        if cfg.data.own_input_keys():
            raise replace(cfg.data, name=registered).own_inputs_conflict(recorded_by_teacher=True)
        changes: dict[str, Any] = {"data.name": registered}
        if spec.is_image and spec.input_shape[1] == spec.input_shape[2]:  # as converted for this teacher, if it was
            changes.update({"data.image_size": spec.input_shape[1], "data.channels": spec.input_shape[0]})
        for key, recorded in changes.items():  # a size or channel count given on purpose would be dropped silently
            given = getattr(cfg.data, key.removeprefix("data."))
            if key in cfg.given and given != recorded:
                raise not_the_recorded_inputs(key, given, spec)
    else:
        recorded = {"data.name": "", "data.input_shape": list(spec.input_shape),
                    "data.num_classes": spec.num_classes or 0, "data.mean": list(spec.mean or ()),
                    "data.std": list(spec.std or ())}
        # What you gave of your inputs' description stands (a wrong class count is refused by load_inputs).
        changes = {key: value for key, value in recorded.items() if key not in cfg.given}
    return with_choices(cfg, changes)


def with_recorded_normalisation(cfg: Config, recorded: InputSpec) -> Config:
    given = tuple(cfg.data.input_shape)
    if given != recorded.input_shape:  # a fully convolutional teacher would run, on inputs it never saw
        raise not_the_recorded_inputs("data.input_shape", given, recorded)
    if cfg.data.mean or recorded.mean is None:
        return cfg
    return with_choices(cfg, {"data.mean": list(recorded.mean), "data.std": list(recorded.std)})


def not_the_recorded_inputs(key: str, given: Any, recorded: InputSpec) -> ConfigError:
    return ConfigError(f"config key '{key}' is {given} but the teacher checkpoint records inputs of shape "
                       f"{recorded.input_shape} ({recorded.name}); drop it to use the recorded inputs")


def classes_of(teacher: Network, spec: InputSpec) -> int:
    """How many classes the teacher predicts, from one dry forward pass on zero inputs."""
    try:
        out = dry_forward(teacher.module, spec.input_shape)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001  whatever the user's model raises for the wrong shape
        raise ConfigError(f"the teacher does not take inputs of shape {spec.input_shape} "
                          f"({str(e).splitlines()[0][:160] if str(e) else type(e).__name__}); "
                          "check the input shape") from None
    if out.dim() != 2:
        shape = tuple(out.shape[1:])
        raise ConfigError(f"the teacher maps inputs of shape {spec.input_shape} to {shape}, not to class logits "
                          f"(batch, classes); check the input shape")
    if out.shape[1] < 2:
        raise ConfigError(f"the teacher returns {out.shape[1]} output per input; datafree distils classifiers of "
                          f"at least 2 classes (logits, not probabilities of one class)")
    return int(out.shape[1])


def load_inputs(cfg: Config, teacher: Network | None, test_data: Any = None) -> Dataset:
    """The run's inputs: the registered data set, or the spec the config describes with its test data."""
    d = cfg.data
    if d.name:
        if d.own_input_keys():  # not refused at load while the name was the default (see Config.check)
            raise d.own_inputs_conflict()
        if test_data is not None:
            raise ConfigError(f"test_data is for your own inputs; data set {d.name!r} has its own test split "
                              f"(describe the inputs with input_shape instead of data)")
        return load_dataset(d.name, d.root, d.download, d.image_size, d.channels)
    spec = InputSpec(tuple(d.input_shape), d.num_classes or None, tuple(d.mean) or None, tuple(d.std) or None)
    if teacher is not None:
        classes = classes_of(teacher, spec)
        if spec.num_classes not in (None, classes):
            raise ConfigError(f"config key 'data.num_classes' is {spec.num_classes} but the teacher predicts {classes} "
                              f"classes; drop num_classes or fix it")
        spec = spec.with_classes(classes)
    elif spec.num_classes is None:
        raise ConfigError("config key 'data.num_classes' is needed when there is no teacher to read it from")
    test = read_test_data(test_data if test_data is not None else (d.test_data or None), spec)
    if test is not None:
        check_test_data(test, spec)
    return Dataset(spec, None, test)
