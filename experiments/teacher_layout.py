"""The frozen teacher's memory format on the CPU: milliseconds of its forward pass (no autograd, as
in student updates) and of its forward and backward to the input (as in generator updates), with
contiguous and with channels-last weights, batch 64, random weights. The student and generator are
trained and keep their layout; a small student with BatchNorm is measured for contrast.

    python experiments/teacher_layout.py      # writes experiments/results/teacher_layout_cpu.md
"""
from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path

import torch

from datafree.models import create_model
from datafree.speed import WARMUP, cpu_name, median_call_ms, median_ms

TEACHERS = [("digits_cnn", (1, 8, 8)), ("lenet5", (1, 32, 32)), ("digits_cnn", (3, 32, 32)),
            ("torchvision.resnet18", (3, 32, 32)), ("wrn40_2", (3, 32, 32)), ("resnet34", (3, 32, 32))]


def timings(model: torch.nn.Module, shape: tuple[int, ...], batch_size: int, repeats: int) -> tuple[float, float]:
    """(forward without autograd, forward + backward to the input) in ms."""
    x = torch.randn(batch_size, *shape)
    x_grad = x.clone().requires_grad_(True)
    return median_ms(model, x, repeats), median_call_ms(lambda: model(x_grad).sum().backward(), repeats)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "teacher_layout_cpu.md"))
    args = p.parse_args(argv)
    rows = ["| network | input | forward: contiguous → channels-last (ms) | forward + input gradient (ms) |",
            "|---|---|---|---|"]
    for name, shape, train in [(n, s, False) for n, s in TEACHERS] + [("digits_cnn_half", (3, 32, 32), True)]:
        torch.manual_seed(0)
        model = create_model(name, 10, shape)
        model.train(train).requires_grad_(train)  # a frozen teacher, or a trained student for contrast
        before = timings(model, shape, args.batch_size, args.repeats)
        model.to(memory_format=torch.channels_last)
        after = timings(model, shape, args.batch_size, args.repeats)
        label = f"{name} ({'trained student, BatchNorm in train mode' if train else 'frozen teacher'})"
        size = "×".join(map(str, shape))
        rows.append(f"| {label} | {size} | {before[0]:.1f} → {after[0]:.1f} ({before[0] / after[0]:.2f}×) "
                    f"| {before[1]:.1f} → {after[1]:.1f} ({before[1] / after[1]:.2f}×) |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# The teacher's memory format on the CPU",
        "",
        f"{cpu_name()}, {torch.get_num_threads()} threads; torch {torch.__version__}; batch {args.batch_size}; median "
        f"of {args.repeats} calls after {WARMUP} warm-up calls; random weights; {datetime.now():%Y-%m-%d %H:%M}.",
        "",
        *rows,
        "",
        "Inputs stay contiguous: a convolution with channels-last weights answers in channels-last. "
        "`trainer.teacher_memory_format = \"auto\"` puts the frozen teacher in channels-last on the CPU; "
        "the trained networks keep `trainer.channels_last` (off by default).",
        "",
        f"Command: `python experiments/teacher_layout.py {' '.join(argv or [])}`",
        "",
    ])
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
