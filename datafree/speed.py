"""Deployment figures of a model: parameters, file size, and CPU latency per sample; and the
name of the CPU they were measured on.

Latency is the median of `repeats` timed forward passes (`time.perf_counter`) after a few untimed
warm-up passes, in eval mode under `torch.inference_mode`, on random inputs, at batch sizes 1 and
64, divided by the batch size. It depends on the machine and on the number of CPU threads, so the
thread count is part of the figures.
"""
from __future__ import annotations

import copy
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree.errors import ConfigError
from datafree.models import count_parameters

BATCH_SIZES = (1, 64)
WARMUP = 3


def cpu_name() -> str:
    """The CPU's model and the vector instructions torch uses on it, e.g. "AMD EPYC (AVX2)": the same
    code runs at different speeds, and in different precisions best, on machines of one name."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    except OSError:
        pass
    return f"{model} ({torch.backends.cpu.get_cpu_capability()})"


def deployment_figures(model: nn.Module, input_shape: tuple[int, ...], *, file: str | Path | None = None,
                       threads: int = 0, repeats: int = 20) -> dict[str, Any]:
    """Parameters, file size (`file_bytes`, None without a file), the CPU threads used, and the
    median milliseconds per sample at batch 1 and batch 64 (`latency_ms_per_sample_batch1`,
    `latency_ms_per_sample_batch64`). `threads` > 0 sets torch's CPU thread count for the
    measurement (the previous count is restored after); 0 keeps the current one."""
    if threads < 0:
        raise ConfigError(f"threads must be 0 (torch's current setting) or a positive count (got {threads})")
    if repeats < 1:
        raise ConfigError(f"repeats must be at least 1 (got {repeats})")
    if any(p.device.type != "cpu" for p in model.parameters()):
        model = copy.deepcopy(model).cpu()  # CPU figures; the caller's module stays where it is
    previous = torch.get_num_threads()
    if threads > 0:
        torch.set_num_threads(threads)
    training = model.training
    model.eval()
    try:
        figures: dict[str, Any] = {
            "parameters": count_parameters(model),
            "file_bytes": Path(file).stat().st_size if file is not None else None,
            "threads": torch.get_num_threads(),
            "repeats": repeats,
        }
        generator = torch.Generator().manual_seed(0)
        for batch in BATCH_SIZES:
            x = torch.randn(batch, *input_shape, generator=generator)
            figures[f"latency_ms_per_sample_batch{batch}"] = median_ms(model, x, repeats) / batch
    finally:
        model.train(training)
        if threads > 0:
            torch.set_num_threads(previous)
    return figures


def median_ms(model: nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Median wall time of one forward pass on `x`, in milliseconds."""
    with torch.inference_mode():
        return median_call_ms(lambda: model(x), repeats)


def median_call_ms(action: Callable[[], object], repeats: int) -> float:
    """Median wall time of `action()` over `repeats` calls after WARMUP untimed ones, in milliseconds."""
    for _ in range(WARMUP):
        action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def file_figures(path: str | Path, *, factory: str | None = None, input_shape: tuple[int, ...] | None = None,
                 threads: int = 0, repeats: int = 20) -> dict[str, Any]:
    """`deployment_figures` of a model file, loaded as `datafree evaluate` loads it (a datafree
    checkpoint, a TorchScript archive, or the weights of `factory`); `input_shape` is needed when
    the file does not record its inputs. Adds `input_shape` and `file` to the figures."""
    from datafree.config import ModelConfig
    from datafree.sources import from_file

    section = ModelConfig(name="", factory=factory or "")
    section.check("model")
    network = from_file(path, section, "model", None)
    if network.spec is not None:
        shape = network.spec.input_shape
    elif input_shape is not None:
        shape = tuple(input_shape)
    else:
        raise ConfigError(f"{path} does not record its inputs: give --input-shape C,H,W (or F) to time it")
    return {**deployment_figures(network.module, shape, file=path, threads=threads, repeats=repeats),
            "input_shape": shape, "file": str(path)}


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def figures_table(columns: dict[str, dict[str, Any]]) -> list[str]:
    """Figures of one or more models side by side, one row per figure."""
    rows = [("", list(columns))]
    if any(f.get("file") for f in columns.values()):
        rows.append(("file", [Path(f["file"]).name if f.get("file") else "-" for f in columns.values()]))
    rows += [("parameters", [f"{f['parameters']:,}" for f in columns.values()]),
             ("file size", [human_bytes(f.get("file_bytes")) for f in columns.values()])]
    rows += [(f"ms/sample, batch {b}", [f"{f[f'latency_ms_per_sample_batch{b}']:.4f}" for f in columns.values()])
             for b in BATCH_SIZES]
    rows.append(("threads", [str(f["threads"]) for f in columns.values()]))
    label = max(len(name) for name, _ in rows)
    widths = [max(len(values[i]) for _, values in rows) for i in range(len(columns))]
    lines = [(f"{name:<{label}}  " + "  ".join(f"{v:>{w}}" for v, w in zip(values, widths))).rstrip()
             for name, values in rows]
    repeats = {f["repeats"] for f in columns.values()}
    lines.append(f"CPU latency: median of {'/'.join(map(str, sorted(repeats)))} timed runs after {WARMUP} warm-up "
                 f"runs (eval mode, torch.inference_mode, random inputs)")
    return lines
