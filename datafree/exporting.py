"""Export a trained model so that it runs without datafree, and prove that the file computes what
the model does.

    report = datafree.export("runs/x/student.pt", "onnx", "student.onnx")
    print("\\n".join(report.lines()))

Three formats, each loaded back the way a deployer would load it:

- ``torchscript``: `torch.jit.trace`, saved with `torch.jit.save`; load with `torch.jit.load(path)`.
- ``exported``: `torch.export.export` with a dynamic batch dimension, saved with `torch.export.save`
  (a ``.pt2``); load with `torch.export.load(path).module()`.
- ``onnx``: `torch.onnx.export` with a dynamic batch dimension (input ``input``, output ``logits``,
  weights inside the one file); run with `onnxruntime.InferenceSession(path)`. Needs
  ``pip install 'datafree[onnx]'``.

The exported model takes what the model takes: inputs already normalised with the mean/std the
report states. With ``bake_normalization=True`` the file applies ``(x - mean) / std`` itself and
takes raw inputs (pixels in [0, 1] for images).

Right after writing, the file is loaded back and run at two batch sizes (1 and the whole check
batch, so a batch size frozen into the graph is caught) on the test inputs of the model's
registered data set when it has one, else on seeded random inputs (standard normal in the model's
input space; uniform [0, 1] pixels when normalisation is baked in). Its logits must match the
PyTorch model's (eval mode, no autograd) within ``1e-4 + 1e-4 * max|logit|``: float32 kernels of
different runtimes sum in different orders and fuse differently, which moves logits by about
1e-6 relative to their size, while a wrong graph (a lost layer, a frozen branch, a wrong
normalisation) moves them by far more than 1e-4. A file that fails the check is deleted. The file
is written under a temporary name in the destination's folder and renamed into place only once it
has passed, so a failed export never leaves a file, and never replaces an existing one.
"""
from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import re
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from datafree import checkpoint
from datafree.errors import CheckpointError, ConfigError, DatafreeError
from datafree.files import sync_folder, write_failure
from datafree.models import count_parameters, eval_mode
from datafree.spec import InputSpec

FORMATS = ("torchscript", "exported", "onnx")
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
CHECK_SEED = 0


class ExportError(DatafreeError):
    """A model that could not be exported, or whose exported file does not compute what it does."""


@dataclass
class ExportReport:
    path: Path
    format: str
    file_bytes: int
    max_difference: float  # largest |exported - PyTorch| logit over the checked inputs, both batch sizes
    tolerance: float  # 1e-4 + 1e-4 * max|logit|
    input_shape: tuple[int, ...]  # one sample; the batch dimension is free
    mean: tuple[float, ...] | None  # normalisation to apply before calling the file; None when baked or none
    std: tuple[float, ...] | None
    baked: bool  # the file applies (x - mean) / std itself
    num_classes: int
    parameters: int
    checked_samples: int
    checked_on: str = ""  # what the inputs of the check were

    def lines(self) -> list[str]:
        """The human-readable report: the check, the file, and what the model expects."""
        from datafree.speed import human_bytes

        shape = ", ".join(map(str, self.input_shape))
        name = f' named "{ONNX_INPUT}"' if self.format == "onnx" else ""
        if self.baked:
            norm = "none: baked in (pass raw inputs" + (", pixels in [0, 1])" if len(self.input_shape) == 3 else ")")
        elif self.mean is not None:
            per = "per channel" if len(self.input_shape) == 3 else "per feature"
            norm = f"(x - mean) / std with mean {fmt(self.mean)}, std {fmt(self.std)} ({per}) before calling it"
        else:
            norm = "none (the model takes its inputs as they are)"
        return [
            f"wrote {self.path} (format: {self.format})",
            (f"largest difference from the PyTorch model: {self.max_difference:.2e} (tolerance {self.tolerance:.2e}) "
             f"on {self.checked_samples} {self.checked_on or 'inputs'}, at batch sizes 1 and {self.checked_samples}"),
            f"file size: {human_bytes(self.file_bytes)} ({self.file_bytes:,} bytes), {self.parameters:,} parameters",
            f"expects: float32 input{name} of shape (N, {shape}), any batch size N",
            f"normalisation: {norm}",
            f"returns: (N, {self.num_classes}) logits, {self.num_classes} classes",
        ]


def fmt(values: tuple[float, ...] | None) -> str:
    return "(" + ", ".join(f"{v:.6g}" for v in values or ()) + ")"


class Normalized(nn.Module):
    """`model((x - mean) / std)`: the exported file then takes raw inputs."""

    def __init__(self, model: nn.Module, spec: InputSpec) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(spec.stats_shape(spec.mean)))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(spec.stats_shape(spec.std)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


def export(model: str | Path | nn.Module, format: str, out: str | Path, *, bake_normalization: bool = False,
           factory: str | None = None, input_shape: tuple[int, ...] | None = None,
           mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None,
           samples: int = 64) -> ExportReport:
    """Export `model` as `format` ("torchscript", "exported" or "onnx") to `out`, check it, and report.

    `model` is a datafree model checkpoint, a TorchScript archive, the weights of `factory`
    ("pkg.mod:fn", runs that code), or an nn.Module (then give `input_shape`, and `mean`/`std` if
    it normalises). `input_shape`/`mean`/`std` override what a checkpoint records. The exported
    file keeps a dynamic batch dimension. Parity: loaded back and run at batch sizes 1 and
    `samples`, its logits must be within ``1e-4 + 1e-4 * max|logit|`` of the PyTorch model's (see
    the module docstring); otherwise, or when the exporter fails, nothing is written and an
    ExportError says why.
    """
    if format not in FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose one of: {', '.join(FORMATS)}")
    out = Path(out)
    if format == "exported" and out.suffix != ".pt2":
        raise ConfigError(f"torch.export files are .pt2 archives (torch.export.load expects the suffix): "
                          f"name the output {out.with_suffix('.pt2').name}")
    if out.is_dir():
        raise ConfigError(f"{out} is a folder; give the file to write, e.g. {out / ('model' + suffix_of(format))}")
    if samples < 2:
        raise ConfigError(f"samples must be at least 2 (the check runs batch sizes 1 and samples; got {samples})")
    if format == "onnx":
        require_onnx()

    net, spec, checked_on_data = resolve(model, factory, input_shape, mean, std)
    num_classes = logits_count(net, spec)
    if bake_normalization and not spec.normalized:
        raise ConfigError("the model has no input normalisation to bake in (no mean/std: it takes its inputs as they "
                          "are); drop bake_normalization (--bake-normalization), or give the mean and std it expects")
    x_raw, checked_on = check_inputs(spec, samples, bake_normalization, checked_on_data)
    x_model = spec.normalize(x_raw)  # what the PyTorch model itself takes
    target = Normalized(net, spec) if bake_normalization else net
    x_file = x_raw if bake_normalization else x_model
    try:
        with eval_mode(net):  # the model's own logits at each checked batch size
            references = [net(x_model[:1]).float(), net(x_model).float()]
    except Exception as e:  # noqa: BLE001  e.g. a model that cannot take a batch of one
        raise ConfigError(f"the model fails on the check's inputs ({first_line(e)})") from None

    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        # The exporters write by path; the temporary name ends in the format's suffix (.pt2 must).
        fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp{suffix_of(format)}", dir=out.parent)
        os.close(fd)
    except OSError as e:
        raise write_failure(out, e) from None
    tmp = Path(tmp_name)
    try:
        with eval_mode(target):  # eval mode for the trace; each module gets its own mode back after
            write_file(target, format, x_file, tmp)
        outputs = [run_file(tmp, format, x_file[:1]), run_file(tmp, format, x_file)]
        difference = max_difference(outputs, references)
        tolerance = 1e-4 + 1e-4 * max(float(r.abs().max()) for r in references)
        if not difference <= tolerance:  # NaN fails too
            raise ExportError(f"the {format} export does not compute what the model does: largest logit difference "
                              f"{difference:.3g} > tolerance {tolerance:.3g} on {samples} {checked_on} "
                              f"(batch sizes 1 and {samples}); nothing was written")
        os.replace(tmp, out)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise write_failure(out, e) from None
        raise
    sync_folder(out.parent)
    baked = bool(bake_normalization)
    return ExportReport(path=out, format=format, file_bytes=out.stat().st_size, max_difference=difference,
                        tolerance=tolerance, input_shape=spec.input_shape, mean=None if baked else spec.mean,
                        std=None if baked else spec.std, baked=baked, num_classes=num_classes,
                        parameters=count_parameters(net), checked_samples=samples, checked_on=checked_on)


def suffix_of(format: str) -> str:
    return {"torchscript": ".pt", "exported": ".pt2", "onnx": ".onnx"}[format]


def require_onnx() -> None:
    """The ONNX exporter needs onnx and onnxscript; the check needs onnxruntime."""
    import importlib.util

    missing = [name for name in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {', '.join(missing)}: pip install 'datafree[onnx]'")


# ---------------------------------------------------------------------------------------------
# The model and its inputs


def resolve(model: str | Path | nn.Module, factory: str | None, input_shape: tuple[int, ...] | None,
            mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> tuple[nn.Module, InputSpec, bool]:
    """The module, its InputSpec, and whether the spec's data set may supply the check's inputs."""
    if isinstance(model, nn.Module):
        if factory:
            raise ConfigError("factory builds a model from a weights file; with an nn.Module give no factory")
        if input_shape is None:
            raise ConfigError("exporting an nn.Module needs input_shape (what it takes per sample, e.g. (3, 32, 32)), "
                              "and mean/std if it expects normalised inputs")
        recorded = None
        net = model
    else:
        given = InputSpec(tuple(input_shape)) if input_shape is not None else None  # for a factory that takes it
        net, recorded = load(Path(model), factory, given)
    if recorded is None and input_shape is None:
        raise ConfigError(f"{model} does not record its inputs: give input_shape (--input-shape C,H,W or F), and "
                          f"mean/std (--mean, --std) if it expects normalised inputs")
    if input_shape is None and mean is None and std is None:
        spec = recorded
    else:
        shape = tuple(input_shape) if input_shape is not None else recorded.input_shape
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std of the model's input normalisation, or neither")
        if mean is None and recorded is not None and shape == recorded.input_shape:
            mean, std = recorded.mean, recorded.std  # the recorded normalisation still holds
        same = recorded is not None and shape == recorded.input_shape and (mean, std) == (recorded.mean, recorded.std)
        spec = InputSpec(shape, recorded.num_classes if recorded else None, mean, std,
                         name=recorded.name if same else "custom")
    if any(p.device.type != "cpu" for p in net.parameters()) or any(b.device.type != "cpu" for b in net.buffers()):
        import copy

        net = copy.deepcopy(net).cpu()  # exported files run on the CPU; the caller's module stays where it is
    return net, spec, spec.name != "custom" and ":" not in spec.name  # "imagefolder:<path>" is no registered set


def load(path: Path, factory: str | None, given: InputSpec | None) -> tuple[nn.Module, InputSpec | None]:
    """Load as `datafree evaluate` does (datafree.sources.from_file); a run checkpoint is refused."""
    from datafree.config import ModelConfig
    from datafree.sources import from_file

    section = ModelConfig(name="", factory=factory or "")
    section.check("model")
    try:
        network = from_file(path, section, "model", given)
    except CheckpointError:
        refuse_run_checkpoint(path)
        raise
    return network.module, network.spec


def refuse_run_checkpoint(path: Path) -> None:
    """A run checkpoint holds a whole run's state, not one model: name the model file to export instead."""
    try:
        checkpoint.safe_load(path, checkpoint.RUN_FORMAT)
    except DatafreeError:
        return  # not a run checkpoint: the loader's own message stands
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    models = [run_dir / name for name in ("student.pt", "teacher.pt") if (run_dir / name).is_file()]
    instead = (" or ".join(str(p) for p in models) if models
               else f"the run's model file ({run_dir}/student.pt or teacher.pt)")
    raise CheckpointError(f"{path} is a run checkpoint (the state to resume training), not a model; export {instead} "
                          f"instead")


def logits_count(net: nn.Module, spec: InputSpec) -> int:
    """The class count, from one dry forward pass; a model that does not return (N, classes) logits is refused."""
    shape = "x".join(map(str, spec.input_shape))
    try:
        with eval_mode(net):
            out = net(torch.zeros(2, *spec.input_shape))
    except Exception as e:  # noqa: BLE001  whatever the forward pass trips over, the inputs do not fit
        raise ConfigError(f"the model does not accept inputs of shape {shape} ({first_line(e)}); give the shape it "
                          f"takes (input_shape, --input-shape)") from None
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"the model returns a {type(out).__name__}, not a tensor of logits; export a module whose "
                          f"forward returns the (N, classes) logits")
    if out.dim() != 2 or out.shape[0] != 2:
        raise ConfigError(f"the model returns outputs of shape {tuple(out.shape[1:])} per sample for inputs of shape "
                          f"{shape}; export needs (N, classes) logits")
    if spec.num_classes is not None and out.shape[1] != spec.num_classes:
        raise ConfigError(f"the model returns {out.shape[1]} logits but its inputs record {spec.num_classes} classes")
    return int(out.shape[1])


def check_inputs(spec: InputSpec, samples: int, baked: bool, from_data: bool) -> tuple[torch.Tensor, str]:
    """`samples` raw inputs (un-normalised) for the parity check, and what they are."""
    if from_data:
        from datafree.data import DATASETS, load_dataset, to_float

        name = spec.name
        if name in DATASETS:
            try:
                test = load_dataset(name).test
            except (DatafreeError, OSError, RuntimeError):  # files not under data/, a missing package: use random
                test = None
            if test is not None and len(test) >= samples and tuple(test.x.shape[1:]) == spec.input_shape:
                return to_float(test.x[:samples]), f"{name} test inputs"
    generator = torch.Generator().manual_seed(CHECK_SEED)
    if baked and spec.is_image:
        return torch.rand(samples, *spec.input_shape, generator=generator), "random pixels in [0, 1]"
    # Standard normal in the model's own input space, expressed as raw inputs.
    return spec.denormalize(torch.randn(samples, *spec.input_shape, generator=generator)), "random inputs"


# ---------------------------------------------------------------------------------------------
# Writing and reading the formats


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """The exporters warn (TorchScript is deprecated, traced branches), log, and print graph dumps to
    stderr on failure: a failure is reported in one line instead, so none of it reaches the console."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


def write_file(model: nn.Module, format: str, x: torch.Tensor, path: Path) -> None:
    """Export `model`, traced on the batch `x`, to `path`; an exporter failure is one ExportError."""
    try:
        with quiet_exporter():
            if format == "torchscript":
                with torch.no_grad():
                    traced = torch.jit.trace(model, (x,), check_trace=False)  # the parity check below is stricter
                torch.jit.save(traced, str(path))
            elif format == "exported":
                batch = torch.export.Dim("batch", min=1)
                program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
                torch.export.save(program, str(path))
            else:
                # The dynamo exporter (torch.export → ONNX), not the legacy TorchScript-based one: it is
                # torch's default and maintained path (the legacy one is deprecated along with TorchScript),
                # it works on this torch with a named dynamic batch dimension, and it refuses a model whose
                # forward branches on tensor values instead of silently freezing one branch as tracing would.
                # external_data=False keeps the weights inside the one file (ONNX's limit: 2 GB).
                batch = torch.export.Dim("batch", min=1)
                torch.onnx.export(model, (x,), str(path), dynamo=True, dynamic_shapes=({0: batch},),
                                  input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], external_data=False,
                                  verbose=False)
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001  anything the exporter raises means: this model cannot go to this format
        raise ExportError(f"cannot export the model as {format}: {exporter_message(e)}") from None


def exporter_message(e: BaseException) -> str:
    """The first line of the exporter's message, and of its root cause when it wraps one."""
    text = first_line(e)
    cause = e
    while cause.__cause__ is not None:
        cause = cause.__cause__
    if cause is not e:
        text = f"{text} ({type(cause).__name__}: {first_line(cause)})"
    return text[:400]


def first_line(e: BaseException) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()  # the ONNX exporter colours its messages
    return (text.splitlines() or [type(e).__name__])[0].strip()


def run_file(path: Path, format: str, x: torch.Tensor) -> torch.Tensor:
    """Load the file as a deployer would and run it on `x` (on the CPU)."""
    try:
        with quiet_exporter():
            if format == "onnx":
                import onnxruntime

                session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
                return torch.from_numpy(out)
            if format == "torchscript":
                loaded = torch.jit.load(str(path), map_location="cpu")
            else:
                loaded = torch.export.load(str(path)).module()
            with torch.no_grad():
                out = loaded(x)
    except Exception as e:  # noqa: BLE001  a file that cannot run at this batch size failed the check
        raise ExportError(f"the {format} file does not run on a batch of {len(x)} ({first_line(e)}); "
                          f"nothing was written") from None
    if not isinstance(out, torch.Tensor):
        raise ExportError(f"the {format} file returns a {type(out).__name__}, not logits; nothing was written")
    return out


def max_difference(outputs: list[torch.Tensor], references: list[torch.Tensor]) -> float:
    """Largest |difference| between each output and the model's logits for the same batch (NaN if any is NaN)."""
    worst = []
    for out, expected in zip(outputs, references):
        if tuple(out.shape) != tuple(expected.shape):
            raise ExportError(f"the exported file returns shape {tuple(out.shape)} for a batch of {len(out)}, "
                              f"the model {tuple(expected.shape)}; nothing was written")
        worst.append(float((out.float() - expected).abs().max()))
    return float("nan") if any(math.isnan(d) for d in worst) else max(worst)
