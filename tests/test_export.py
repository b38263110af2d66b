"""Export to TorchScript, torch.export and ONNX with the parity check; deployment figures (--speed).

The models are tiny digits CNNs with random weights: parity is checked on the real digits test
images, which is all these tests need (accuracy does not matter here)."""
from __future__ import annotations

import importlib.util
import re
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import datafree
import datafree.exporting as export_module
from datafree import checkpoint
from datafree.cli import main
from datafree.errors import DatafreeError
from datafree.models import count_parameters
from datafree.speed import deployment_figures

ExportError = export_module.ExportError
FORMATS = {"torchscript": "model.pt", "exported": "model.pt2", "onnx": "model.onnx"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models on a busy two-core machine: one thread spares them the thread pool's contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits():
    return datafree.load_dataset("digits")


def save_digits_model(folder: Path, name: str, arch: str, digits, **args) -> Path:
    torch.manual_seed(len(name))
    model = datafree.create_model(arch, 10, (1, 8, 8), **args)
    model.train()  # a few passes give BatchNorm running statistics of its own, so eval mode matters
    with torch.no_grad():
        for start in range(0, 384, 128):
            model(digits.info.normalize(digits.train.x[start:start + 128]))
    return datafree.save_model(model, digits.info, folder / name, arch={"name": arch, "args": args})


@pytest.fixture(scope="module")
def student(tmp_path_factory, digits) -> Path:
    return save_digits_model(tmp_path_factory.mktemp("models"), "student.pt", "digits_cnn_tiny", digits)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, digits) -> Path:
    return save_digits_model(tmp_path_factory.mktemp("teacher"), "teacher.pt", "digits_cnn", digits, width=8)


def reference(path: Path) -> nn.Module:
    return datafree.load_model(path).model.eval()


def run_exported(path: Path, fmt: str, x: torch.Tensor) -> torch.Tensor:
    """Run an exported file the way a deployer would, without datafree."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert session.get_inputs()[0].name == "input"
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        loaded = torch.jit.load(str(path)) if fmt == "torchscript" else torch.export.load(str(path)).module()
    with torch.no_grad():
        return loaded(x)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_round_trips_at_two_batch_sizes(fmt, student, digits, tmp_path):
    out = tmp_path / FORMATS[fmt]
    report = datafree.export(student, fmt, out)
    model = reference(student)

    assert report.path == out and out.is_file() and report.file_bytes == out.stat().st_size > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary file left
    assert 0 <= report.max_difference <= report.tolerance
    assert report.checked_samples == 64 and report.checked_on == "digits test inputs"
    assert (report.input_shape, report.num_classes, report.baked) == ((1, 8, 8), 10, False)
    assert (report.mean, report.std) == (digits.info.mean, digits.info.std)
    assert report.parameters == count_parameters(model)

    x = digits.info.normalize(digits.test.x[100:107])  # not the inputs the check used
    for n in (1, 7):
        with torch.no_grad():
            want = model(x[:n])
        got = run_exported(out, fmt, x[:n])
        assert got.shape == (n, 10)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("fmt", ["exported", "onnx"])
def test_baked_normalization_takes_raw_pixels(fmt, student, digits, tmp_path):
    out = tmp_path / FORMATS[fmt]
    report = datafree.export(student, fmt, out, bake_normalization=True)
    assert report.baked and report.mean is None and report.std is None
    assert "none: baked in" in "\n".join(report.lines())

    model = reference(student)
    raw = digits.test.x[200:207]  # pixels in [0, 1]
    got = run_exported(out, fmt, raw)
    with torch.no_grad():
        torch.testing.assert_close(got, model(digits.info.normalize(raw)), atol=1e-4, rtol=1e-4)
        assert not torch.allclose(got, model(raw), atol=1e-4, rtol=1e-4)  # the file really normalises its inputs


def test_module_without_normalisation_cannot_bake_it(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3))
    with pytest.raises(DatafreeError, match="no input normalisation to bake"):
        datafree.export(model, "torchscript", tmp_path / "m.pt", input_shape=(4,), bake_normalization=True)
    assert list(tmp_path.iterdir()) == []

    report = datafree.export(model, "torchscript", tmp_path / "m.pt", input_shape=(4,), mean=(0.5,), std=(2.0,))
    assert report.checked_on == "random inputs" and report.mean == (0.5,) and report.num_classes == 3
    assert report.max_difference <= report.tolerance


class FirstSampleAlone(nn.Module):
    """Behaves differently for a batch of one: tracing at the check batch freezes the other branch."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        if x.shape[0] == 1:
            return self.fc(x) + 1.0
        return self.fc(x)


def test_failed_parity_check_writes_nothing(tmp_path):
    out = tmp_path / "m.pt"
    out.write_bytes(b"an earlier export")
    with pytest.raises(ExportError, match=r"largest logit difference 1 > tolerance"):
        datafree.export(FirstSampleAlone(), "torchscript", out, input_shape=(4,))
    assert out.read_bytes() == b"an earlier export"  # the old file is neither replaced nor removed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_onnx_without_onnxruntime_names_the_extra(monkeypatch, student, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(DatafreeError, match=re.escape("pip install 'datafree[onnx]'")):
        datafree.export(student, "onnx", tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# The command line


FACTORIES = """
import torch
from torch import nn


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):  # a branch on tensor values: torch.export cannot follow it
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


class Dicty(Branchy):
    def forward(self, x):
        return {"logits": self.fc(x)}


def branchy():
    return Branchy()


def dicty():
    return Dicty()
"""


@pytest.fixture(scope="module")
def factories(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("factories")
    (folder / "export_test_factories.py").write_text(textwrap.dedent(FACTORIES))
    torch.save({f"fc.{k}": v for k, v in nn.Linear(4, 3).state_dict().items()}, folder / "weights.pt")
    sys.path.insert(0, str(folder))
    yield folder
    sys.path.remove(str(folder))
    sys.modules.pop("export_test_factories", None)


def run_checkpoint_args(tmp_path: Path, student: Path, factories: Path) -> tuple[list[str], str]:
    run_dir = tmp_path / "run"
    path = checkpoint.save_run({"notes": {"command": "distill"}}, run_dir, 5, keep=1)
    (run_dir / "student.pt").write_bytes(student.read_bytes())
    return [str(path), "--format", "onnx"], f"export {run_dir / 'student.pt'} instead"


CASES = {
    "run checkpoint": run_checkpoint_args,
    "unknown format": lambda tmp, s, f: ([str(s), "--format", "tflite"], "choose one of: torchscript, exported, onnx"),
    "branch on values, exported": lambda tmp, s, f: (
        [str(f / "weights.pt"), "--factory", "export_test_factories:branchy", "--input-shape", "4", "--format",
         "exported"], "cannot export the model as exported: "),
    "branch on values, onnx": lambda tmp, s, f: (
        [str(f / "weights.pt"), "--factory", "export_test_factories:branchy", "--input-shape", "4", "--format",
         "onnx"], "cannot export the model as onnx: "),
    "returns a dict": lambda tmp, s, f: (
        [str(f / "weights.pt"), "--factory", "export_test_factories:dicty", "--input-shape", "4", "--format",
         "torchscript"], "returns a dict, not a tensor of logits"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_cli_export_errors_are_one_line_and_leave_no_file(case, student, factories, tmp_path, capfd):
    argv, expected = CASES[case](tmp_path, student, factories)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capfd.readouterr()
    assert main(["export", *argv, "--out", str(out_dir / "model.pt2")]) == 2
    captured = capfd.readouterr()
    assert captured.err.startswith("datafree: error: ") and captured.err.count("\n") == 1, captured.err
    assert expected in captured.err
    assert captured.out == ""
    assert list(out_dir.iterdir()) == []


def test_cli_export_prints_the_report(student, tmp_path, capsys):
    out = tmp_path / "student.pt2"
    assert main(["export", str(student), "--format", "exported", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    difference, tolerance = map(float, re.search(r"largest difference from the PyTorch model: (\S+) "
                                                 r"\(tolerance (\S+)\)", text).groups())
    assert difference <= tolerance
    assert re.search(rf"file size: .* \({out.stat().st_size:,} bytes\)", text)
    assert "input of shape (N, 1, 8, 8)" in text
    assert f"mean ({datafree.load_dataset('digits').info.mean[0]:.6g})" in text
    assert "(N, 10) logits, 10 classes" in text


# ---------------------------------------------------------------------------------------------
# Deployment figures


def test_deployment_figures_are_measured_and_restore_threads(student):
    model = reference(student).train()
    before = torch.get_num_threads()
    threads = 2 if before == 1 else 1
    figures = deployment_figures(model, (1, 8, 8), file=student, threads=threads, repeats=3)
    assert torch.get_num_threads() == before and model.training  # both given back
    assert figures["threads"] == threads
    assert figures["parameters"] == count_parameters(model)
    assert figures["file_bytes"] == student.stat().st_size
    assert figures["latency_ms_per_sample_batch1"] > 0 and figures["latency_ms_per_sample_batch64"] > 0
    assert deployment_figures(model, (1, 8, 8), repeats=1)["file_bytes"] is None


def test_cli_evaluate_speed_puts_model_and_teacher_side_by_side(student, teacher, capsys):
    assert main(["evaluate", str(student), "--speed", "--teacher", str(teacher), "--threads", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(rf"{re.escape(str(student))}: test accuracy \d+\.\d\d% on 450 samples", lines[0])
    rows = {re.split(r"\s{2,}", line.strip())[0]: re.split(r"\s{2,}", line.strip())[1:] for line in lines[1:]}
    assert rows["file"] == ["student.pt", "teacher.pt"]
    params = [int(v.replace(",", "")) for v in rows["parameters"]]
    assert params == [count_parameters(reference(student)), count_parameters(reference(teacher))]
    for row in ("ms/sample, batch 1", "ms/sample, batch 64"):
        assert len(rows[row]) == 2 and all(float(v) > 0 for v in rows[row])
    assert rows["threads"] == ["1", "1"]
    assert all(re.fullmatch(r"[\d.]+ kB", v) for v in rows["file size"])


def test_cli_teacher_without_speed_is_refused(student, capsys):
    assert main(["evaluate", str(student), "--teacher", str(student)]) == 2
    assert capsys.readouterr().err == "datafree: error: --teacher goes with --speed; add --speed\n"
