"""What a suite writes: results.json, results.md (a table per pair, with confidence intervals,
p-values against the reference method and accuracy against time), the plot, and the TensorBoard
image and text of the finished suite."""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datafree import plot
from datafree.bench.suite import PairSpec, Suite, display_path
from datafree.files import write_text
from datafree.stats import Summary, format_p, summarize, welch_p

PLOT_FILE = "accuracy_vs_time.png"


def machine() -> dict[str, Any]:
    import torch

    from datafree.speed import cpu_name

    return {"platform": platform.platform(), "processor": cpu_name(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_outputs(out: Path, spec: Suite, results: dict[str, Any], final: bool) -> None:
    """results.json and results.md after every run; the plot too, and TensorBoard at the end."""
    results.update(suite=spec.name, suite_file=display_path(spec.path), description=spec.description,
                   machine=machine(), updated=time.strftime("%Y-%m-%d %H:%M:%S"))
    write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    markdown = results_markdown(spec, results)
    write_text(out / "results.md", markdown)
    fig = plot.figure(plot_rows(spec, results))
    plot.save_png(fig, out / PLOT_FILE)
    if final:
        log_to_tensorboard(out / "runs" / "suite", plot.rgb_array(fig), markdown,
                           step=sum("accuracy" in r for r in current_runs(results)))


def current_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The records of the suite as it is: not those of a changed config or teacher still waiting to run again,
    so that a suite stopped half way never averages two settings' runs."""
    return [r for r in results["runs"] if not r.get("superseded")]


# ---------------------------------------------------------------------------------------------
# Accuracy against time, from each run's evaluations


def accuracy_curve(record: dict[str, Any]) -> list[tuple[float, float]]:
    """(seconds, student accuracy) of every evaluation of a run that has one, in time order."""
    return sorted((float(e["seconds"]), float(e["student_accuracy"])) for e in record.get("evaluations") or []
                  if e.get("student_accuracy") is not None and e.get("seconds") is not None)


def accuracy_at(curve: list[tuple[float, float]], seconds: float) -> float | None:
    """The accuracy of the last evaluation at or before `seconds` of training; None if none."""
    before = [acc for t, acc in curve if t <= seconds]
    return before[-1] if before else None


def time_to_reach(curve: list[tuple[float, float]], percent: float) -> float | None:
    """The training time of the first evaluation at or above `percent`; None if none reached it."""
    return next((t for t, acc in curve if acc >= percent), None)


# ---------------------------------------------------------------------------------------------
# The table


@dataclass
class MethodSummary:
    method: str
    data: str  # real or synthetic
    n: int  # finished seeds
    failed: int
    accuracy: Summary
    accuracies: list[float]
    agreement: float | None
    seconds: float
    student_steps: float
    synthetic_samples: float
    real_samples: float
    params: int | None
    published: str
    peak_memory_mb: float | None  # the largest over seeds; None for runs recorded before it was measured
    curves: list[list[tuple[float, float]]] = field(default_factory=list)  # of finished runs with evaluations


def summarize_pair(pair: PairSpec, results: dict[str, Any]) -> list[MethodSummary]:
    rows = []
    for method in pair.methods:
        records = [r for r in current_runs(results) if r["pair"] == pair.name and r["method"] == method]
        done = [r for r in records if "accuracy" in r]
        if not records:
            continue
        agreements = [r["agreement"] for r in done if r.get("agreement") is not None]
        accuracies = [r["accuracy"] for r in done]
        peaks = [r["peak_memory_mb"] for r in done if r.get("peak_memory_mb") is not None]
        rows.append(MethodSummary(
            method=method, data=records[0]["data"], n=len(done), failed=len(records) - len(done),
            accuracy=summarize(accuracies), accuracies=accuracies,
            agreement=statistics.fmean(agreements) if agreements else None, seconds=mean_of(done, "seconds"),
            student_steps=mean_of(done, "student_steps"), synthetic_samples=mean_of(done, "synthetic_samples"),
            real_samples=mean_of(done, "real_samples"), params=done[0]["params"] if done else None,
            published=published_text(records[-1]), peak_memory_mb=max(peaks) if peaks else None,
            curves=[c for c in (accuracy_curve(r) for r in done) if c]))
    return rows


def mean_of(records: list[dict[str, Any]], key: str) -> float:
    return statistics.fmean(r[key] for r in records) if records else math.nan


def published_text(record: dict[str, Any]) -> str:
    if not record.get("published_accuracy"):
        return "—"
    text = f"{record['published_accuracy']:.2f}"
    extra = []
    if record.get("published_teacher_accuracy"):
        extra.append(f"teacher {record['published_teacher_accuracy']:.2f}")
    if record.get("published_hours"):
        extra.append(f"{record['published_hours']:g} GPU-h")
    return f"{text} ({', '.join(extra)})" if extra else text


def count(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:,.0f}"  # NaN: no finished run


def of(k: int, n: int) -> str:
    return "" if k == n else f" ({k}/{n})"


def budget_cell(row: MethodSummary, seconds: float) -> str:
    """Mean over seeds of the accuracy at `seconds` (with k/n when only k runs had evaluated by then)."""
    values = [v for v in (accuracy_at(c, seconds) for c in row.curves) if v is not None]
    if not values:
        return "—"
    return f"{statistics.fmean(values):.2f}{of(len(values), len(row.curves))}"


def time_to_cell(row: MethodSummary, percent: float) -> str:
    """Mean seconds until the runs that reached `percent` first did, with k/n when not all did."""
    if not row.curves:
        return "—"
    times = [t for t in (time_to_reach(c, percent) for c in row.curves) if t is not None]
    mean = f"{statistics.fmean(times):.1f}" if times else "—"
    return f"{mean}{of(len(times), len(row.curves))}"


def interval_text(s: Summary) -> str:
    return f"[{s.low:.2f}, {s.high:.2f}]" if s.has_interval else "—"


def number(value: float) -> str:
    return f"{value:g}"


def results_markdown(spec: Suite, results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    current = current_runs(results)
    finished, superseded = sum("accuracy" in r for r in current), len(results["runs"]) - len(current)
    ref = spec.reference
    lines = [f"# Benchmark suite `{spec.name}`", ""]
    if spec.description:
        lines += [spec.description.strip(), ""]
    explained = [(
        "Student accuracy is the mean ± sample standard deviation over seeds of the final test accuracy. "
        "*95% CI* is the 95% confidence interval of that mean from the t distribution "
        "(mean ± t(0.975, n − 1) · std / √n): intervals made this way contain the method's true mean accuracy "
        "(over all seeds) in 95% of repetitions of the experiment. "
        f"*p vs {ref}* is the two-sided p-value of Welch's t-test (unequal variances) against the reference "
        f"method `{ref}`: how likely a difference of means at least this large would be if both methods were "
        "equally accurate (small, e.g. below 0.05: unlikely to be seed noise alone; pairs that do not run "
        f"`{ref}` have none). With 3 seeds both are wide: the interval spans ±2.48 standard deviations "
        "(t(0.975, 2) / √3) and only large differences give a small p."),
    ]
    if spec.budgets:
        explained.append("*acc. @B s* is the accuracy of a run's last evaluation at or before B seconds of training, "
                         "mean over seeds (k/n: only k of the n runs had evaluated by then).")
    if spec.time_to:
        explained.append("*s to X%* is the training time at which a run's evaluation first reached X% test "
                         "accuracy, mean over the runs that reached it (k/n: k of the n runs did; — : none did). "
                         "Runs evaluate every trainer.eval_every steps, so both are as fine as that.")
    explained.append(
        "Wall-clock is the mean training time of one run (the training loop, evaluations included, start-up "
        "excluded); peak memory is the largest, over seeds, of the bench process's peak resident memory during "
        "a run (what earlier runs left in the process included; Linux only); student steps are student updates; "
        "synthetic samples are the generated samples the run drew (generator and student batches); real samples "
        "are training images read. *Published* is the figure the method's config states (with its teacher and "
        "GPU-hours where given); it was measured with its own teacher and budget.")
    lines += [
        (f"Produced by `datafree bench {spec.name}` (suite file `{display_path(spec.path)}`); "
         f"{finished} of {len(spec.runs)} runs finished, last updated {results.get('updated', '')}"
         + (f"; runs recorded with an earlier config or teacher, left out until they run again: {superseded}."
            if superseded else ".")),
        (f"Machine: {m.get('processor', '?')}, {m.get('cpu_count', '?')} CPU cores, {m.get('torch_threads', '?')} "
         f"torch threads, GPU: {m.get('cuda') or 'none'}, torch {m.get('torch', '?')}."),
        "",
        " ".join(explained),
        "",
    ]
    teacher_records = results.get("teachers", {})
    for pair in spec.pairs:
        teacher = spec.teachers[pair.teacher]
        t = teacher_records.get(pair.teacher, {})
        runs = [r for r in spec.runs if r.pair == pair.name]
        student = runs[0].config.student.name if runs else "?"
        rows = summarize_pair(pair, results)
        with_p = ref in pair.methods
        reference_accuracies = next((r.accuracies for r in rows if r.method == ref), [])
        headers = ["method", "data", "student acc. %", "95% CI"] + ([f"p vs {ref}"] if with_p else []) \
            + [f"acc. @{number(b)} s" for b in spec.budgets] + [f"s to {number(x)}%" for x in spec.time_to] \
            + ["agreement %", "wall-clock s", "peak memory MB", "student steps", "synthetic samples", "real samples",
               "params", "published %"]
        align = ["---", "---", "---:", "---:"] + ["---:"] * (len(headers) - 5) + ["---"]
        note = "" if with_p else f" No p-values: this pair does not run the reference method `{ref}`."
        lines += [f"## {pair.name}", "",
                  (f"Data set `{teacher.config.data.name}`; teacher `{teacher.config.teacher.name}` "
                   f"({display_path(teacher.config_path)}), student `{student}`; seeds "
                   f"{', '.join(map(str, pair.seeds))}.{note}"),
                  "",
                  "| " + " | ".join(headers) + " |",
                  "|" + "|".join(align) + "|"]
        t_acc = f"{t['accuracy']:.2f}" if t.get("accuracy") is not None else "—"
        t_sec = f"{t['seconds']:.1f}" if t.get("seconds") is not None else "—"
        t_steps = f"{t['steps']:,}" if t.get("steps") is not None else "—"
        t_real = f"{t['real_samples']:,}" if t.get("real_samples") is not None else "—"
        blank = ["—"] * (int(with_p) + len(spec.budgets) + len(spec.time_to))
        cells = [f"**teacher** `{teacher.config.teacher.name}`", "real", t_acc, "—", *blank, "—", t_sec, "—", t_steps,
                 "0", t_real, f"{t.get('params') or 0:,}", published_text(t)]
        lines.append("| " + " | ".join(cells) + " |")
        for row in rows:
            s = row.accuracy
            if row.n:
                acc = f"{s.mean:.2f} ± {s.std:.2f}" if row.n > 1 else f"{s.mean:.2f}"
            else:
                acc = "—"
            notes = []
            if row.n < len(pair.seeds):
                notes.append(f"{row.n}/{len(pair.seeds)} seeds")
            if row.failed:
                notes.append(f"{row.failed} diverged")
            if notes:
                acc += f" ({', '.join(notes)})"
            cells = [row.method, row.data, acc, interval_text(s)]
            if with_p:
                cells.append("reference" if row.method == ref
                             else format_p(welch_p(row.accuracies, reference_accuracies)))
            cells += [budget_cell(row, b) for b in spec.budgets] + [time_to_cell(row, x) for x in spec.time_to]
            cells += [f"{row.agreement:.2f}" if row.agreement is not None else "—",
                      f"{row.seconds:.1f}" if row.n else "—",
                      f"{row.peak_memory_mb:,.0f}" if row.peak_memory_mb is not None else "—",
                      count(row.student_steps), count(row.synthetic_samples), count(row.real_samples),
                      f"{row.params or 0:,}", row.published]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"![accuracy against wall-clock and against training time]({PLOT_FILE})", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The plot and TensorBoard


def plot_rows(spec: Suite, results: dict[str, Any]) -> list[plot.Row]:
    """A row per pair with a finished run: mean accuracy (± std over seeds) against mean wall-clock,
    and each method's mean accuracy-against-time curve."""
    rows = []
    for pair in spec.pairs:
        summaries = [s for s in summarize_pair(pair, results) if s.n]
        if not summaries:
            continue
        points = [plot.Point(s.method, s.seconds, s.accuracy.mean, s.accuracy.std,
                             marker="square" if s.data == "real" else "circle") for s in summaries]
        curves = [plot.Curve(s.method, *plot.mean_step_curve(s.curves)) for s in summaries if s.curves]
        t = results.get("teachers", {}).get(pair.teacher, {})
        reference = ("teacher", t["accuracy"]) if t.get("accuracy") is not None else None
        n = max(len(pair.seeds), 1)
        rows.append(plot.Row(f"{pair.name}  (mean ± std over {n} seed{'s' if n > 1 else ''}; squares: real data)",
                             points, curves, reference, list(spec.budgets)))
    return rows


def log_to_tensorboard(log_dir: Path, image, markdown: str, step: int) -> None:
    """The plot (an H × W × 3 array) and the table in the suite's TensorBoard folder."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(log_dir))
    try:
        writer.add_image("suite/accuracy_vs_wall_clock", image, step, dataformats="HWC")
        writer.add_text("suite/results", markdown, step)
    finally:
        writer.close()
