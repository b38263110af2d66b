"""Training throughput per method at the CIFAR shape (ResNet-34 teacher, ResNet-18 student), against
a plain reference loop written the way DFAD's original training script trains, in the same run.

    python experiments/throughput.py                          # CPU: batch 16, a few iterations
    python experiments/throughput.py --device cuda --batch-size 256 --precision bf16 --channels-last

One iteration is what `datafree` does per training step: the generator's update(s), then the
discriminator's and the student's (e.g. DFAD: 1 generator + 5 student updates). Samples are the
inputs the iteration draws (generator samples, or real images for real-data methods), so
samples/s = samples per iteration / seconds per iteration. Weights are random: this measures
speed, not accuracy. Each method runs its recipe from experiments/configs/cifar10/resnet34-resnet18/
when there is one (its step ratios, generator, replay pool), else the registered recipe.

The reference loop does DFAD's work (1 generator + 5 student updates, L1 losses, the same
networks and generator) the way VainF/Data-Free-Adversarial-Distillation's DFAD_cifar.py does it:
fp32, default memory format, the teacher's parameters left trainable so every teacher forward
builds an autograd graph, the generator's forward in student updates building a graph that is
then detached, and the generator's backward computing weight gradients of the student and the
teacher too. Only the `dfad` rows do the same work as the reference; the other rows' ratios
compare a different amount of work per sample with it. (The original also forces deterministic
cuDNN kernels, which can only slow it down: this reference leaves torch's defaults, so the
ratio is conservative.)

On a GPU the table adds the peak memory of each row (weights, optimizer states, activations)
and the share of the GPU's peak FLOP/s that the measured FLOPs per iteration reach.
"""
from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from datafree.config import Config, load
from datafree.data import Dataset, Split
from datafree.methods import METHODS
from datafree.models import create_model
from datafree.spec import InputSpec
from datafree.speed import cpu_name
from datafree.trainer import Trainer
from generators import GENERATORS

CONFIGS = Path(__file__).parent / "configs" / "cifar10" / "resnet34-resnet18"
RESULTS = Path(__file__).parent / "results"
CIFAR = InputSpec((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), name="cifar10",
                  augment="shift4-flip")
# Dense tensor-core peaks (TFLOP/s) of GPUs this is likely to meet: 16-bit (bf16/fp16) and TF32, which
# cuDNN uses for fp32 convolutions by default (torch.backends.cudnn.allow_tf32).
PEAK_TFLOPS = {"H200": {"16": 989.4, "tf32": 494.7}, "H100 PCIe": {"16": 756.0, "tf32": 378.0},
               "H100": {"16": 989.4, "tf32": 494.7}, "A100": {"16": 312.0, "tf32": 156.0}}


@dataclass
class Workload:
    iteration: Callable[[], None]  # one full training iteration
    samples: Callable[[], int]  # samples drawn so far
    precision: str = "fp32"


@dataclass
class Row:
    name: str
    samples_per_iteration: int
    seconds_per_iteration: float
    first_iteration_s: float
    flops_per_iteration: float | None = None
    peak_memory: int | None = None
    precision: str = "fp32"

    @property
    def samples_per_s(self) -> float:
        return self.samples_per_iteration / self.seconds_per_iteration


def random_cifar(n: int = 2048) -> Dataset:
    """CIFAR-shaped random uint8 images, for the real-data methods' batches."""
    g = torch.Generator().manual_seed(0)
    split = lambda k: Split(torch.randint(0, 256, (k, 3, 32, 32), dtype=torch.uint8, generator=g),  # noqa: E731
                            torch.randint(0, 10, (k,), generator=g))
    return Dataset(CIFAR, split(n), split(256))


# ---------------------------------------------------------------------------------------------
# The reference: DFAD's training loop as its original script writes it


def reference_workload(args: argparse.Namespace, device: torch.device) -> Workload:
    cfg = load(CONFIGS / "dfad.toml", {"trainer.batch_size": args.batch_size})
    torch.manual_seed(0)
    teacher = create_model("resnet34", 10, CIFAR.input_shape).to(device).eval()  # parameters stay trainable
    student = create_model("resnet18", 10, CIFAR.input_shape).to(device).train()
    generator = GENERATORS.get(cfg.generator.name)(CIFAR, **cfg.generator.args).to(device).train()
    optimizer_s = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer_g = torch.optim.Adam(generator.parameters(), lr=1e-3)
    batch, nz, student_steps = args.batch_size, generator.nz, cfg.trainer.s_steps
    drawn = [0]

    def iteration() -> None:
        for _ in range(student_steps):
            z = torch.randn(batch, nz, device=device)
            optimizer_s.zero_grad()
            fake = generator(z).detach()
            t_logit = teacher(fake)
            s_logit = student(fake)
            loss_s = F.l1_loss(s_logit, t_logit.detach())
            loss_s.backward()
            optimizer_s.step()
        z = torch.randn(batch, nz, device=device)
        optimizer_g.zero_grad()
        fake = generator(z)
        t_logit = teacher(fake)
        s_logit = student(fake)
        loss_g = -F.l1_loss(s_logit, t_logit)
        loss_g.backward()
        optimizer_g.step()
        drawn[0] += batch * (student_steps + 1)

    return Workload(iteration, lambda: drawn[0])


# ---------------------------------------------------------------------------------------------
# datafree's trainer


def method_config(method: str, args: argparse.Namespace, precision: str, channels_last: bool, compile_: bool) -> Config:
    settings = {"trainer.batch_size": args.batch_size, "trainer.device": str(args.device),
                "trainer.precision": precision, "trainer.channels_last": channels_last, "trainer.compile": compile_,
                "teacher.checkpoint": "", "data.name": "cifar10"}
    path = CONFIGS / f"{method}.toml"
    if path.is_file():
        return load(path, settings)
    return load(overrides={"method.name": method, "teacher.name": "resnet34", "student.name": "resnet18", **settings})


def datafree_workload(method: str, args: argparse.Namespace, precision: str, channels_last: bool,
                      compile_: bool) -> Workload:
    cfg = method_config(method, args, precision, channels_last, compile_)
    torch.manual_seed(0)
    teacher = create_model("resnet34", 10, CIFAR.input_shape)
    student = create_model(cfg.student.name, 10, CIFAR.input_shape, **cfg.student.args)
    trainer = Trainer(cfg, random_cifar(), student, teacher, run_dir=None)
    # One step of Trainer.fit's loop, without its logging and checkpoints.
    return Workload(trainer.train_step, trainer.samples_seen, precision)


# ---------------------------------------------------------------------------------------------
# Measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def count_flops(iteration: Callable[[], None]) -> float:
    """FLOPs of one iteration, forward and backward, counted op by op (compiled graphs run eagerly here)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        torch.compiler.disable(iteration, recursive=True)()
    return float(counter.get_total_flops())


def measure(name: str, build: Callable[[], Workload], args: argparse.Namespace) -> Row:
    device = args.device
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    print(f"{name}: building", file=sys.stderr, flush=True)
    work = build()
    started = time.perf_counter()
    work.iteration()  # first iteration: torch.compile, cuDNN autotuning, allocator warm-up, replay pool fill
    synchronize(device)
    first = time.perf_counter() - started
    for _ in range(args.warmup - 1):
        work.iteration()
    flops = None if args.no_flops else count_flops(work.iteration)
    drawn_before, blocks = work.samples(), []
    for _ in range(args.repeats):
        synchronize(device)
        started = time.perf_counter()
        for _ in range(args.iterations):
            work.iteration()
        synchronize(device)
        blocks.append((time.perf_counter() - started) / args.iterations)
    samples_per_iteration = (work.samples() - drawn_before) // (args.repeats * args.iterations)  # steady state
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    row = Row(name, samples_per_iteration, statistics.median(blocks), first, flops, peak, work.precision)
    print(f"{name}: {row.samples_per_s:.1f} samples/s ({1000 * row.seconds_per_iteration:.0f} ms/iteration, "
          f"blocks {', '.join(f'{1000 * b:.0f}' for b in blocks)} ms)", file=sys.stderr, flush=True)
    del work
    return row


def peak_tflops(args: argparse.Namespace, precision: str) -> float | None:
    if args.peak_tflops:
        return args.peak_tflops
    if args.device.type != "cuda":
        return None
    gpu = torch.cuda.get_device_name(args.device)
    for key, peaks in PEAK_TFLOPS.items():
        if key in gpu:
            return peaks["16"] if precision in ("bf16", "fp16") else peaks["tf32"]
    return None


def table(rows: list[Row], reference: Row, args: argparse.Namespace) -> str:
    gpu = args.device.type == "cuda"
    head = ["method", "samples/iteration", "samples/s", "× reference", "ms/iteration", "GFLOP/iteration", "TFLOP/s"]
    if gpu:
        head += ["% of peak", "peak memory (GiB)"]
    head += ["first iteration (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name, str(row.samples_per_iteration), f"{row.samples_per_s:.1f}",
                 f"{row.samples_per_s / reference.samples_per_s:.2f}", f"{1000 * row.seconds_per_iteration:.0f}"]
        achieved = row.flops_per_iteration / row.seconds_per_iteration / 1e12 if row.flops_per_iteration else None
        cells += [f"{row.flops_per_iteration / 1e9:.1f}" if row.flops_per_iteration else "–",
                  f"{achieved:.3f}" if achieved is not None else "–"]
        if gpu:
            peak = peak_tflops(args, row.precision)
            cells += [f"{100 * achieved / peak:.1f}" if achieved is not None and peak else "–",
                      f"{row.peak_memory / 2 ** 30:.2f}" if row.peak_memory is not None else "–"]
        cells.append(f"{row.first_iteration_s:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(args: argparse.Namespace) -> str:
    if args.device.type == "cuda":
        where = f"{torch.cuda.get_device_name(args.device)}, CUDA {torch.version.cuda}"
    else:
        where = f"CPU ({cpu_name()}), {torch.get_num_threads()} threads"
    settings = f"precision {args.precision}, channels-last {'on' if args.channels_last else 'off'}, " \
               f"torch.compile {'on' if args.compile else 'off'}"
    return (f"{where}; torch {torch.__version__}; batch {args.batch_size}; median of {args.repeats} blocks of "
            f"{args.iterations} iterations after {args.warmup} warm-up iteration(s); datafree rows: {settings}; "
            f"{time.strftime('%Y-%m-%d %H:%M')}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    distillation = [m for m in METHODS.names() if m != "scratch"]
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", default=",".join(distillation),
                   help="comma-separated methods (default: all distillation methods)")
    p.add_argument("--batch-size", type=int, default=16,
                   help="per update; 256 is the CIFAR protocol's (use it on a GPU)")
    p.add_argument("--iterations", type=int, default=2, help="timed iterations per block")
    p.add_argument("--repeats", type=int, default=3, help="timed blocks per row (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (at least 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, auto")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="datafree rows' precision")
    p.add_argument("--channels-last", action="store_true", help="datafree rows: channels-last memory format")
    p.add_argument("--compile", action="store_true",
                   help="datafree rows: torch.compile (its cost shows as the first iteration)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="the device's peak TFLOP/s for the %% of peak column")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (one untimed iteration less)")
    p.add_argument("--out", default="", help="markdown file (default experiments/results/throughput_{cpu,gpu}.md)")
    args = p.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.device = torch.device(args.device)
    if args.device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda, but no CUDA device is available")
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        p.error(METHODS.unknown_message(unknown[0]))
    if min(args.batch_size, args.iterations, args.repeats, args.warmup) < 1:
        p.error("--batch-size, --iterations, --repeats and --warmup must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    requested = (args.precision, args.channels_last, args.compile)
    plain = ("fp32", False, False)
    runs: list[tuple[str, Callable[[], Workload]]] = []
    for method in args.methods:
        if method == "dfad" and requested != plain:  # separates the loop's savings from precision/layout/compile
            runs.append(("dfad (fp32, default layout, eager)", lambda: datafree_workload("dfad", args, *plain)))
        runs.append((method, lambda m=method: datafree_workload(m, args, *requested)))
    # The reference is measured first and last: a drift between the two shows a machine that was not quiet.
    before = measure("reference DFAD loop (start)", lambda: reference_workload(args, args.device), args)
    rows = [measure(name, build, args) for name, build in runs]
    after = measure("reference DFAD loop (end)", lambda: reference_workload(args, args.device), args)
    reference = Row("reference DFAD loop", before.samples_per_iteration,
                    (before.seconds_per_iteration + after.seconds_per_iteration) / 2,
                    before.first_iteration_s, before.flops_per_iteration, after.peak_memory)
    drift = abs(before.seconds_per_iteration - after.seconds_per_iteration) / reference.seconds_per_iteration
    text = "\n".join([
        "# Training throughput: ResNet-34 teacher → ResNet-18 student, CIFAR shape (3×32×32, 10 classes)", "",
        describe(args), "",
        table([reference, *rows], reference, args), "",
        "samples/s = inputs drawn per iteration (generator samples; real images for kd/gankd) / seconds per iteration. "
        "× reference: samples/s over the reference DFAD loop's (fp32, default layout, teacher graph built, "
        "student and teacher weight gradients in the generator step); only the dfad rows do the same work. "
        "Rows with a replay pool (ours) ask the generator for half of each student batch, so they draw fewer samples "
        "for the same network work. "
        f"The reference was measured at the start and the end of the run: {100 * drift:.1f}% apart. "
        "first iteration: includes torch.compile and allocator/cuDNN warm-up. Weights are random.",
        "",
        f"Command: `python experiments/throughput.py {' '.join(argv if argv is not None else sys.argv[1:])}`".rstrip(),
    ])
    print(text)
    out = Path(args.out) if args.out else RESULTS / f"throughput_{'gpu' if args.device.type == 'cuda' else 'cpu'}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")
    print(f"\nwritten to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
