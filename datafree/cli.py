"""Command line: a thin layer over `datafree.api`.

    datafree                      the main job: teacher, real-data KD and data-free student on digits
    datafree train-teacher ...    train a classifier on real data and save it as a teacher
    datafree distill ...          distill a teacher into a student with any method
    datafree evaluate CKPT        test accuracy of a saved model (--speed: size and CPU latency)
    datafree export CKPT ...      export a model to TorchScript, torch.export or ONNX, checked against it
    datafree list                 registered data sets, models, methods, generators, discriminators
    datafree bench SUITE          run a benchmark suite (see experiments/suites/)

Bad input is one line on stderr and exit status 2 (add --debug for the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from datafree.errors import DatafreeError, Interrupted


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="datafree", description="Data-free adversarial knowledge distillation.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = commands.add_parser("demo", help="the main job on digits (also what plain `datafree` runs)")
    demo.add_argument("--run-dir", default="", help="where the three runs go (default runs/demo-<time>)")
    add_common(demo, config=False)

    teacher = commands.add_parser("train-teacher", help="train a classifier on real data and save it as a teacher")
    teacher.add_argument("--model", help="registered model name (teacher.name)")
    teacher.add_argument("--out", help="teacher checkpoint to write (default <run-dir>/teacher.pt)")
    add_run_options(teacher)

    distill = commands.add_parser("distill", help="distill a teacher into a student")
    distill.add_argument("--teacher", help="teacher file: a datafree checkpoint, a TorchScript archive, or the weights "
                                           "of --teacher-factory (teacher.checkpoint)")
    distill.add_argument("--teacher-factory", metavar="MODULE:FUNCTION",
                         help="function that builds the teacher; --teacher holds its weights (runs your code)")
    distill.add_argument("--student", help="registered model name (student.name)")
    distill.add_argument("--student-factory", metavar="MODULE:FUNCTION",
                         help="function that builds the student instead of a registered model (runs your code)")
    distill.add_argument("--method", help="method name (see `datafree list`)")
    add_input_options(distill)
    add_run_options(distill)

    evaluate = commands.add_parser("evaluate", help="test accuracy of a model")
    evaluate.add_argument("checkpoint", help="a datafree checkpoint, a TorchScript archive, or weights for --factory")
    evaluate.add_argument("--data", help="registered data set (default: the checkpoint's)")
    evaluate.add_argument("--data-root", default="data")
    evaluate.add_argument("--factory", metavar="MODULE:FUNCTION",
                          help="function that builds the model (runs your code)")
    add_input_options(evaluate, run=False)
    evaluate.add_argument("--speed", action="store_true",
                          help="also print parameters, file size and CPU milliseconds per sample at batch 1 and 64")
    evaluate.add_argument("--teacher", metavar="FILE", help="with --speed: time this model too, side by side")
    evaluate.add_argument("--threads", type=int, default=0, metavar="N",
                          help="with --speed: CPU threads for the timing (default: torch's)")
    evaluate.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    export = commands.add_parser("export", help="export a model to run without datafree (checked against it)")
    export.add_argument("model", help="a datafree model checkpoint, a TorchScript archive, or weights for --factory")
    export.add_argument("--format", required=True, metavar="{torchscript,exported,onnx}",
                        help="torchscript (torch.jit.load), exported (torch.export .pt2) or onnx (onnxruntime)")
    export.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    export.add_argument("--bake-normalization", action="store_true",
                        help="the file applies (x - mean) / std itself and takes raw inputs (pixels in [0, 1])")
    export.add_argument("--factory", metavar="MODULE:FUNCTION", help="function that builds the model (runs your code)")
    export.add_argument("--input-shape", type=numbers_of(int), metavar="C,H,W",
                        help="what the model takes per sample, when the file does not record it")
    export.add_argument("--mean", type=numbers_of(float),
                        help="the model's input normalisation mean, per channel or feature")
    export.add_argument("--std", type=numbers_of(float), help="its standard deviation (with --mean)")
    export.add_argument("--samples", type=int, default=64, metavar="N", help="inputs of the parity check (default 64)")
    export.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    listing = commands.add_parser("list", help="registered names")
    listing.add_argument("what", nargs="?", default="all",
                         choices=["all", "data", "models", "methods", "terms", "generators", "discriminators",
                                  "gan-losses"])
    listing.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    bench = commands.add_parser("bench", help="run a benchmark suite (methods × pairs × seeds)")
    bench.add_argument("suite", help="suite name under experiments/suites/ or a path to a suite TOML")
    bench.add_argument("--out", default="", help="results folder (default experiments/results/<suite>)")
    bench.add_argument("--data-root", default="", help="data root for torchvision data sets")
    add_common(bench, config=False)
    return parser


def add_common(p: argparse.ArgumentParser, config: bool = True) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar or console messages")
    # default=SUPPRESS: left unset unless given here, so `datafree --debug distill ...` keeps it too
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    if config:
        p.add_argument("--config", help="TOML config file (see experiments/configs/)")
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set trainer.steps=500 (repeatable)")


def numbers_of(kind: type) -> "callable":
    """An argparse type for comma-separated numbers: 3,32,32 or 0.5,0.5,0.5."""
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, e.g. 3,32,32 "
                                             f"(got {text!r})") from None
    parse.__name__ = f"{kind.__name__} list"
    return parse


def add_input_options(p: argparse.ArgumentParser, run: bool = True) -> None:
    """Your own model's inputs, when no registered data set describes them."""
    p.add_argument("--input-shape", type=numbers_of(int), metavar="C,H,W",
                   help="what the teacher takes per sample, e.g. 3,32,32 or 20 (data.input_shape)")
    if run:
        p.add_argument("--num-classes", type=int, help="class count (default: read from the teacher)")
    p.add_argument("--mean", type=numbers_of(float),
                   help="the teacher's input normalisation mean, per channel or feature")
    p.add_argument("--std", type=numbers_of(float), help="its standard deviation (with --mean)")
    p.add_argument("--test-data", metavar="FILE|FOLDER",
                   help="your test inputs: a .npz (arrays x, and y when labelled) "
                        "or an image folder of <class>/ folders")


def add_run_options(p: argparse.ArgumentParser) -> None:
    add_common(p)
    p.add_argument("--data", help="data set name (data.name)")
    p.add_argument("--data-root", help="folder of torchvision data sets (data.root)")
    p.add_argument("--download", action="store_true", help="let torchvision download a missing data set")
    p.add_argument("--steps", type=int, help="training iterations (trainer.steps)")
    p.add_argument("--seed", type=int, help="random seed (trainer.seed)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, auto (trainer.device)")
    p.add_argument("--run-dir", help="run directory (run.dir)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped run from its latest checkpoint")


def option_overrides(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    """Command-line options that were given, as dotted config keys."""
    common = {"data": "data.name", "data_root": "data.root", "steps": "trainer.steps", "seed": "trainer.seed",
              "device": "trainer.device", "run_dir": "run.dir", "input_shape": "data.input_shape",
              "num_classes": "data.num_classes", "mean": "data.mean", "std": "data.std", "test_data": "data.test_data"}
    out = {key: getattr(args, name) for name, key in {**common, **mapping}.items()
           if getattr(args, name, None) is not None}
    if args.download:
        out["data.download"] = True
    if args.overwrite:
        out["run.overwrite"] = True
    return out


def run_command(args: argparse.Namespace, command: str, mapping: dict[str, str], fixed: dict[str, Any]) -> int:
    from datafree import api
    from datafree.config import load, parse_overrides

    if args.resume:
        # Given = not left at its default: None for options, False for flags, [] for --set (so --seed 0 counts).
        given = [name for name in ("config", "set", "data", "data_root", "download", "steps", "seed", "device",
                                   "run_dir", "overwrite", "teacher", "student", "method", "model", "out",
                                   "teacher_factory", "student_factory", "input_shape", "num_classes", "mean", "std",
                                   "test_data")
                 if getattr(args, name, None) is not None and getattr(args, name) is not False
                 and getattr(args, name) != []]
        if given:
            raise DatafreeError(f"--resume continues {args.resume} exactly, with the config saved in it; drop "
                                f"--{given[0].replace('_', '-')} (to change settings, start a new run with "
                                f"--config {args.resume}/config.toml)")
        result = api.resume(args.resume, quiet=args.quiet)
        if result.already_finished:
            print(f"{command}: run {args.resume} had already finished; nothing to resume "
                  "(start a new run to train more)")
    else:
        items = {**fixed, **option_overrides(args, mapping)}
        items.update(parse_overrides(args.set))
        cfg = load(args.config, items)
        result = api.run(command, cfg, quiet=args.quiet)
    report(command, result)
    return 0


def report(command: str, result) -> None:
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports
        return
    m = result.metrics
    figures = []
    if "student_accuracy" in m:
        figures.append(f"test accuracy {m['student_accuracy']:.2f}%" + (
            f" (teacher {m['teacher_accuracy']:.2f}%, agreement {m['agreement']:.2f}%)" if "teacher_accuracy" in m
            else ""))
    elif "agreement" in m:
        figures.append(f"agreement with the teacher {m['agreement']:.2f}% on {m['test_samples']:,} "
                       "unlabelled test inputs")
    if "heldout_agreement" in m and "student_accuracy" not in m:
        figures.append(f"agreement {m['heldout_agreement']:.2f}% on {m['heldout_samples']:,} "
                       "held-out synthetic samples")
    # student updates, not trainer steps: a data-free step holds several (trainer.s_steps)
    updates = "updates" if command == "train-teacher" else "student updates"
    figures.append(f"{m['student_steps']:,} {updates}, {m['seconds']:.1f} s")
    print(f"{command}: " + ", ".join(figures))
    print(f"saved {result.checkpoint}  (run directory {result.run_dir})")


def cmd_train_teacher(args: argparse.Namespace) -> int:
    return run_command(args, "train-teacher", {"model": "teacher.name", "out": "teacher.checkpoint"},
                       {"method.name": "scratch"})


def cmd_distill(args: argparse.Namespace) -> int:
    return run_command(args, "distill", {"teacher": "teacher.checkpoint", "teacher_factory": "teacher.factory",
                                         "student": "student.name", "student_factory": "student.factory",
                                         "method": "method.name"}, {})


def cmd_evaluate(args: argparse.Namespace) -> int:
    from datafree import api

    if not args.speed and (args.teacher or args.threads):
        raise DatafreeError(f"--{'teacher' if args.teacher else 'threads'} goes with --speed; add --speed")
    if args.threads < 0:
        raise DatafreeError(f"--threads must be a positive count, or 0 for torch's default (got {args.threads})")
    m = api.evaluate(args.checkpoint, data=args.data, test_data=args.test_data, input_shape=args.input_shape,
                     mean=args.mean, std=args.std, factory=args.factory, data_root=args.data_root)
    print(f"{args.checkpoint}: test accuracy {m['accuracy']:.2f}% on {m['samples']:,} samples "
          f"({m['parameters']:,} parameters)")
    if args.speed:
        from datafree.speed import figures_table, file_figures

        columns = {"model": file_figures(args.checkpoint, factory=args.factory, input_shape=args.input_shape,
                                         threads=args.threads)}
        if args.teacher:  # the same inputs as the model when the teacher's file does not record them
            columns["teacher"] = file_figures(args.teacher, input_shape=columns["model"]["input_shape"],
                                              threads=args.threads)
        for line in figures_table(columns):
            print(line)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from datafree.exporting import export

    report = export(args.model, args.format, args.out, bake_normalization=args.bake_normalization,
                    factory=args.factory, input_shape=args.input_shape, mean=args.mean, std=args.std,
                    samples=args.samples)
    for line in report.lines():
        print(line)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from datafree.data import DATASETS
    from datafree.methods import METHODS
    from datafree.methods.terms import TERMS
    from datafree.models import MODELS
    from discriminators import DISCRIMINATORS
    from discriminators.losses import GAN_LOSSES
    from generators import GENERATORS

    def first_line(obj: object) -> str:
        return ((getattr(obj, "__doc__", None) or "").strip().splitlines() or [""])[0]

    sections = {
        "data": [(n, first_line(DATASETS.get(n))) for n in DATASETS],
        "models": [(n, first_line(MODELS.get(n))) for n in MODELS if not n.startswith("torchvision.")]
                  + [("torchvision.<name>", "any torchvision classifier, random init")],
        "methods": [(n, f"[{METHODS.get(n).data} data] {METHODS.get(n).summary}") for n in METHODS],
        "terms": [(n, f"[{', '.join(TERMS.get(n).players)}] {TERMS.get(n).doc.splitlines()[0]}") for n in TERMS],
        "generators": [(n, first_line(GENERATORS.get(n))) for n in GENERATORS],
        "discriminators": [(n, first_line(DISCRIMINATORS.get(n))) for n in DISCRIMINATORS],
        "gan-losses": [(n, "") for n in GAN_LOSSES],
    }
    for name, rows in sections.items():
        if args.what in ("all", name):
            print(f"{name}:")
            for entry, text in rows:
                print(f"  {entry:<22} {text}".rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from datafree.demo import run_demo

    run_demo(run_root=args.run_dir or None, quiet=args.quiet)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from datafree.bench import run_suite

    try:
        run_suite(args.suite, out=args.out or None, data_root=args.data_root or None, quiet=args.quiet)
    except Interrupted as e:  # the run saved a checkpoint; the same command continues the suite from it
        print(f"datafree: bench stopped at step {e.step} of a run (checkpoint {e.path}).\n"
              f"Continue with the same command: datafree bench {args.suite}", file=sys.stderr)
        return 130
    return 0


COMMANDS = {"demo": cmd_demo, "train-teacher": cmd_train_teacher, "distill": cmd_distill, "evaluate": cmd_evaluate,
            "export": cmd_export, "list": cmd_list, "bench": cmd_bench}


def interrupted_command(path) -> str:
    """The command (train-teacher or distill) of the run whose checkpoint `path` is."""
    from datafree import checkpoint

    if path is not None:
        try:
            return checkpoint.safe_load(path, checkpoint.RUN_FORMAT)["notes"].get("command", "distill")
        except (DatafreeError, OSError, KeyError, TypeError, AttributeError):
            pass
    return "distill"


def os_error_message(e: OSError) -> str:
    """One line for a failed file operation, with the fix that fits its cause."""
    import errno

    where = f": {e.filename}" if e.filename else ""
    hint = {errno.ENOENT: "check the path", errno.EACCES: "check its permissions", errno.EPERM: "check its permissions",
            errno.ENOSPC: "free some disk space", errno.EROFS: "the file system is read-only: choose another folder",
            errno.ENOTDIR: "part of that path is a file, not a folder", errno.EISDIR: "that is a folder, not a file"}
    return f"{e.strerror or e}{where}; {hint.get(e.errno, 'check the path and its permissions')}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.command is None:  # plain `datafree` (with --debug, say): the main job
        args = build_parser().parse_args(["demo", *argv])
    try:
        return COMMANDS[args.command](args)
    except Interrupted as e:
        if e.path is None and int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 saved and says so
            return 130
        run_dir = e.run_dir or "<run dir>"
        if args.command == "demo":  # the demo itself cannot be resumed, only the run it was in
            how = (f"The demo cannot be resumed: run it again (datafree demo), or finish the stopped run alone with: "
                   f"datafree {interrupted_command(e.path)} --resume {run_dir}")
        else:
            how = f"Resume with: datafree {args.command} --resume {run_dir}"
        print(f"datafree: stopped at step {e.step}; checkpoint saved to {e.path}.\n{how}", file=sys.stderr)
        return 130
    except DatafreeError as e:
        if args.debug:
            raise
        print(f"datafree: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing or unreadable file, a full disk: the environment, not a bug
        if args.debug:
            raise
        print(f"datafree: error: {os_error_message(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("datafree: interrupted", file=sys.stderr)
        return 130
