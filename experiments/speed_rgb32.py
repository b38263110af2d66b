"""Milliseconds per data-free student update at 3×32×32: a stock torchvision ResNet-18 teacher
(10 classes) and datafree's `digits_cnn_half` student, batch 64, on this machine's CPU.

    python experiments/speed_rgb32.py                      # before/after table for ours and dfad
    python experiments/speed_rgb32.py --device cuda

One update = one iteration of the method (its generator update(s) and its student updates)
divided by its student updates. "before" is the generator this project used at 32×32 until it
was sized to the student (width 64, twice the image side: ~3× the teacher's FLOPs); then the sized
generator with the teacher's weights contiguous, as they were until the teacher went channels-last
on the CPU (`trainer.teacher_memory_format`); then with the generator's upsampling convolutions run
as plain layers, as until they were fused (generators/resize_conv.py); then the teacher's convolutions
whole, as until they were trimmed to the kernel taps that reach the image (datafree/trimmed_conv.py);
then the default; then bf16 autocast (fast on CPUs with AVX-512 bf16, emulated and slow elsewhere),
untrimmed and by default. Weights are random: this measures speed, not accuracy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

from datafree.config import load
from datafree.data import Dataset
from datafree.models import count_parameters, create_model
from datafree.spec import InputSpec
from datafree.speed import cpu_name
from datafree.trainer import Trainer

SPEC = InputSpec((3, 32, 32), 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), name="rgb32")
RESULTS = Path(__file__).parent / "results"


def ms_per_student_update(method: str, overrides: dict, args: argparse.Namespace,
                          unfused: bool = False) -> tuple[float, list[float]]:
    cfg = load(overrides={"method.name": method, "data.name": "", "data.input_shape": [3, 32, 32],
                          "data.mean": list(SPEC.mean), "data.std": list(SPEC.std), "student.name": "digits_cnn_half",
                          "trainer.batch_size": args.batch_size, "trainer.device": args.device, **overrides})
    torch.manual_seed(0)
    teacher = create_model("torchvision.resnet18", 10, SPEC.input_shape)
    student = create_model("digits_cnn_half", 10, SPEC.input_shape)
    trainer = Trainer(cfg, Dataset(SPEC, None, None), student, teacher, run_dir=None)
    if unfused:  # the same layers, each run on its own
        trainer.generator.body = nn.Sequential(*trainer.generator.body)
    updates = trainer.player("student").repeats
    for _ in range(args.warmup):
        trainer.train_step()
    blocks = []
    for _ in range(args.repeats):
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(args.iterations):
            trainer.train_step()
        if trainer.device.type == "cuda":
            torch.cuda.synchronize()
        blocks.append(1000 * (time.perf_counter() - started) / (args.iterations * updates))
    generator = count_parameters(trainer.generator)
    print(f"{method} {overrides}{' unfused' if unfused else ''}: {statistics.median(blocks):.1f} ms/update "
          f"(generator {generator:,} parameters)", file=sys.stderr, flush=True)
    return statistics.median(blocks), blocks


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=5, help="timed iterations per block")
    p.add_argument("--repeats", type=int, default=5, help="timed blocks (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first (fills the replay pool)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=str(RESULTS / "speed_rgb32_cpu.md"))
    args = p.parse_args(argv)
    whole = {"trainer.trim_teacher": False}
    contiguous_teacher = {"trainer.teacher_memory_format": "contiguous", **whole}
    bf16 = {"trainer.precision": "bf16"}
    settings = [("before (generator width 64, teacher contiguous, fp32)",
                 {"generator.args": {"width": 64}, **contiguous_teacher}, True),
                ("generator sized to the student, teacher contiguous, fp32", contiguous_teacher, True),
                ("teacher channels-last on the CPU, fp32", whole, True),
                ("upsampling convolutions fused, fp32", whole, False),
                ("default (teacher's convolutions trimmed), fp32", {}, False),
                ("teacher's convolutions whole, bf16 autocast", {**whole, **bf16}, False),
                ("default, bf16 autocast", bf16, False)]
    rows = ["| method | setting | ms per student update | blocks (ms) |", "|---|---|---:|---|"]
    for method in ("ours", "dfad"):
        for name, overrides, unfused in settings:
            median, blocks = ms_per_student_update(method, overrides, args, unfused)
            rows.append(f"| {method} | {name} | {median:.1f} | {', '.join(f'{b:.0f}' for b in blocks)} |")
    where = (torch.cuda.get_device_name() if args.device.startswith("cuda")
             else f"CPU ({cpu_name()}), {torch.get_num_threads()} threads")
    text = "\n".join([
        "# Data-free student updates at 3×32×32: torchvision ResNet-18 → digits_cnn_half", "",
        f"{where}; torch {torch.__version__}; batch {args.batch_size}; median of {args.repeats} blocks of "
        f"{args.iterations} iterations after {args.warmup} warm-up iterations; {time.strftime('%Y-%m-%d %H:%M')}.", "",
        *rows, "",
        f"Command: `python experiments/speed_rgb32.py {' '.join(sys.argv[1:] if argv is None else argv)}`".rstrip()])
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
