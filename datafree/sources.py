"""Where a teacher or student comes from, and what it really was (provenance for the run's records).

A network may be:
- an `nn.Module` passed from Python;
- a registered model by name (`datafree list models`), built for the input spec;
- a datafree model checkpoint (`teacher.pt`, `student.pt`) of a registered model;
- a TorchScript archive (`torch.jit.save`): **runs the archive's code**;
- a factory `package.module:function` that returns the module, plus optionally a weights file
  (a state_dict, loaded with `weights_only=True`): **imports and runs that function**.
The last two run code you chose; nothing else does (datafree checkpoints hold tensors only).
"""
from __future__ import annotations

import importlib
import inspect
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree import checkpoint
from datafree.config import ModelConfig
from datafree.errors import CheckpointError, ConfigError
from datafree.models import count_parameters, create_model
from datafree.spec import InputSpec


@dataclass
class Network:
    module: nn.Module
    kind: str  # "module", "registered", "checkpoint", "torchscript", "factory"
    source: str  # the registered name, the file or the factory
    spec: InputSpec | None = None  # what a datafree checkpoint says about its inputs
    arch: dict[str, Any] | None = None  # how save_model records it so that load_model can rebuild it

    @property
    def scripted(self) -> bool:
        """TorchScript runs its own graph: forward hooks on its layers never fire."""
        return isinstance(self.module, torch.jit.ScriptModule)

    def provenance(self) -> dict[str, Any]:
        module = getattr(self.module, "original_name", None) or type(self.module).__qualname__
        return {"kind": self.kind, "source": self.source, "class": module, "parameters": count_parameters(self.module)}

    def label(self) -> str:
        """A short name for run folders: the registered name, else the class name."""
        if self.kind == "registered" or (self.arch and "name" in self.arch):
            return (self.arch or {}).get("name", self.source)
        return self.provenance()["class"]


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive is a zip holding the model's code (`*/code/...`); torch.save files hold none."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any("/code/" in name or name.endswith("constants.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError, ValueError, UnicodeDecodeError, EOFError):  # not a zip, or a damaged one
        return False


def load_torchscript(path: Path) -> nn.Module:
    try:
        with warnings.catch_warnings():  # torch marks TorchScript deprecated; archives still load, and users have them
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:  # noqa: BLE001  a damaged or incompatible archive: the file is the problem
        raise CheckpointError(f"{path} is a TorchScript archive that cannot be loaded "
                              f"({str(e).splitlines()[0][:160]}); save it again with torch.jit.save") from None


def import_factory(text: str) -> Any:
    """`package.module:function` → the function (imports the module: runs your code)."""
    module_name, sep, attr = text.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"factory {text!r} must look like package.module:function")
    if "" not in sys.path and "." not in sys.path:  # as `python -m` would: modules beside you are found
        sys.path.insert(0, "")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"factory {text!r}: cannot import {module_name!r} ({e}); run from the folder that holds it "
                          f"or add that folder to PYTHONPATH") from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise ConfigError(f"factory {text!r}: {module_name!r} has no function {attr!r}")
    return function


def call_factory(text: str, args: dict[str, Any], spec: InputSpec | None) -> nn.Module:
    """Call a factory with `args`, plus num_classes / input_shape when its signature takes them."""
    function = import_factory(text)
    kwargs = dict(args)
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    for name, value in (("num_classes", spec and spec.num_classes), ("input_shape", spec and spec.input_shape)):
        if name not in parameters or name in kwargs:
            continue
        if value is not None:
            kwargs[name] = value
        elif parameters[name].default is inspect.Parameter.empty:
            option = "--num-classes (data.num_classes)" if name == "num_classes" else "--input-shape (data.input_shape)"
            raise ConfigError(f"factory {text!r} takes {name}: give {option}")
    try:
        module = function(**kwargs)
    except TypeError as e:
        raise ConfigError(f"factory {text!r} cannot be called with {kwargs}: {e}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"factory {text!r} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], InputSpec | None]:
    """A state_dict from a weights file (torch.save(model.state_dict())) or a datafree model
    checkpoint, and the inputs that checkpoint records (None for a bare state_dict)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"weights file not found: {path}") from None
    except Exception:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a weights file torch can read safely (a state_dict saved with "
                              f"torch.save(model.state_dict(), path)); pickled modules are refused") from None
    if isinstance(obj, dict) and obj.get("format") == checkpoint.MODEL_FORMAT:
        saved = checkpoint.safe_load(path, checkpoint.MODEL_FORMAT)
        try:
            return saved["state_dict"], InputSpec.from_dict(saved["data"])
        except (KeyError, TypeError, ValueError, ConfigError):
            raise CheckpointError(f"{path} is a damaged model checkpoint; "
                                  "use an intact copy or create it again") from None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, None
    raise CheckpointError(f"{path} holds no state_dict; save one with torch.save(model.state_dict(), path)")


def load_weights_into(module: nn.Module, path: Path, what: str) -> InputSpec | None:
    """Load a weights file into `module`; returns the inputs the file records, if it does."""
    weights, spec = read_weights(path)
    try:
        module.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: the weights do not fit the {what} ({checkpoint.short(e)})") from None
    return spec


def from_file(path: str | Path, section: ModelConfig, role: str, spec: InputSpec | None) -> Network:
    """A network from a file (and maybe a factory): a datafree checkpoint, a TorchScript archive, or weights."""
    path = Path(path)
    if section.factory:
        module = call_factory(section.factory, section.args, spec)
        recorded = load_weights_into(module, path, f"{role} that {section.factory} builds")
        return Network(module, "factory", f"{section.factory} + {path}", spec=recorded,
                       arch={"factory": section.factory, "args": section.args})
    if path.is_file() and is_torchscript(path):
        return Network(load_torchscript(path), "torchscript", str(path))
    try:
        ckpt = checkpoint.load_model(path)
    except CheckpointError as e:
        if "custom model" in str(e) or "bare state_dict" in str(e):
            raise CheckpointError(f"{path} holds weights without their architecture; give the function that builds "
                                  f"the model: {factory_option(role)} package.module:function (in Python: load the "
                                  f"weights into your module and pass the module)") from None
        raise
    return Network(ckpt.model, "checkpoint", str(path), spec=ckpt.info, arch=ckpt.arch)


def factory_option(role: str) -> str:
    return "--factory" if role == "model" else f"--{role}-factory"


def teacher_network(section: ModelConfig, spec: InputSpec | None) -> Network:
    if not section.checkpoint:
        if section.factory:
            raise ConfigError("a teacher built by teacher.factory needs its trained weights: pass --teacher WEIGHTS")
        raise ConfigError("distillation needs a teacher: pass --teacher FILE (train one with `datafree train-teacher`)")
    return from_file(section.checkpoint, section, "teacher", spec)


def student_network(section: ModelConfig, spec: InputSpec, module: nn.Module | None = None) -> Network:
    """The student to train: a given module, a factory, or a registered model (optionally warm-started)."""
    if module is not None:
        return Network(module, "module", section.source or type(module).__qualname__)
    if section.checkpoint and not section.factory and not section.name:
        return from_file(section.checkpoint, section, "student", spec)
    if section.factory:
        built = call_factory(section.factory, section.args, spec)
        network = Network(built, "factory", section.factory, arch={"factory": section.factory, "args": section.args})
    else:
        for reserved, value in (("num_classes", spec.num_classes), ("input_shape", spec.input_shape)):
            if reserved in section.args:
                where = f"data set {spec.name}" if spec.name != "custom" else "the inputs"
                raise ConfigError(f"config key 'student.args.{reserved}' cannot be set: it comes from {where} "
                                  f"({value}); remove it")
        built = create_model(section.name, spec.num_classes, spec.input_shape, **section.args)
        network = Network(built, "registered", section.name, arch={"name": section.name, "args": section.args})
    if section.checkpoint:
        load_weights_into(network.module, Path(section.checkpoint), "student")
        network.source += f" from {section.checkpoint}"
    return network
