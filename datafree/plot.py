"""The benchmark's figure, drawn with matplotlib (Agg backend: no display needed).

One row per teacher/student pair, two panels each:
- left, the figure the data-free literature compares methods with: mean test accuracy against
  mean wall-clock, one point per method with ± std error bars over seeds (squares: methods that
  read real data), the teacher's accuracy as a dashed line;
- right, accuracy against training time: per method, the mean over seeds of each run's
  "last evaluation so far" curve on a common time grid, drawn step-wise.
"""
from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

X_LABEL, Y_LABEL, TIME_LABEL = "wall-clock (s)", "test accuracy (%)", "training time (s)"
MARKERS = {"circle": "o", "square": "s"}
REFERENCE_COLOR = "#444444"


@dataclass
class Point:
    label: str  # the legend entry (a method)
    x: float
    y: float
    y_err: float = 0.0  # half-length of the error bar (0: none)
    marker: str = "circle"  # circle or square


@dataclass
class Curve:
    label: str  # a method
    times: list[float]  # increasing; the value holds from each time until the next
    values: list[float]


@dataclass
class Row:
    """One pair: its scatter panel and its curves panel."""
    title: str
    points: list[Point]
    curves: list[Curve] = field(default_factory=list)
    reference: tuple[str, float] | None = None  # a dashed horizontal line and its label (the teacher)
    budgets: list[float] = field(default_factory=list)  # dotted vertical lines on the curves panel


def mean_step_curve(runs: Sequence[Sequence[tuple[float, float]]]) -> tuple[list[float], list[float]]:
    """The mean of step-wise curves: each run's (time, value) evaluations hold their value until the
    next one, and the mean is taken on the union of all their times, from the time every run has
    its first value on (before that the mean would be of a changing set of runs)."""
    curves = [sorted(run) for run in runs if run]
    if not curves:
        return [], []
    start = max(c[0][0] for c in curves)
    grid = sorted({t for c in curves for t, _ in c if t >= start})
    times, means = [], []
    for t in grid:
        values = [c[bisect.bisect_right([s for s, _ in c], t) - 1][1] for c in curves]
        times.append(t)
        means.append(sum(values) / len(values))
    return times, means


def palette(rows: Sequence[Row]) -> dict[str, tuple[float, ...]]:
    """One colour per label, the same in every row, in order of first appearance."""
    import matplotlib

    colours = list(matplotlib.colormaps["tab10"].colors) + list(matplotlib.colormaps["Dark2"].colors)
    mapping: dict[str, tuple[float, ...]] = {}
    for row in rows:
        for label in [p.label for p in row.points] + [c.label for c in row.curves]:
            if label not in mapping:
                mapping[label] = colours[len(mapping) % len(colours)]
    return mapping


def figure(rows: Sequence[Row]):
    """A matplotlib Figure with a row of two panels per pair (a one-line note when there is none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not rows:
        fig = Figure(figsize=(6, 1))
        FigureCanvasAgg(fig)
        fig.text(0.5, 0.5, "no finished runs yet", ha="center", va="center")
        return fig
    fig = Figure(figsize=(14, 4.4 * len(rows)), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(rows), 2, squeeze=False)
    colours = palette(rows)
    for row, (left, right) in zip(rows, axes):
        draw_scatter(left, row, colours)
        draw_curves(right, row, colours)
    return fig


def draw_scatter(ax, row: Row, colours: dict[str, tuple[float, ...]]) -> None:
    for p in row.points:
        ax.errorbar([p.x], [p.y], yerr=[p.y_err] if p.y_err > 0 else None, fmt=MARKERS.get(p.marker, "o"),
                    color=colours[p.label], markersize=8, markeredgecolor="black", capsize=4, elinewidth=1.5)
    reference_line(ax, row.reference)
    ax.set_xlim(left=0, right=max([p.x for p in row.points] + [1e-9]) * 1.1)
    ax.set_title(row.title, fontsize=11)
    ax.set_xlabel(X_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.grid(True, color="#e6e6e6")


def draw_curves(ax, row: Row, colours: dict[str, tuple[float, ...]]) -> None:
    from matplotlib.lines import Line2D

    for c in row.curves:
        if c.times:
            ax.step(c.times, c.values, where="post", color=colours[c.label], linewidth=1.6,
                    marker="o" if len(c.times) == 1 else None)
    reference_line(ax, row.reference)
    for seconds in row.budgets:
        ax.axvline(seconds, color="#999999", linestyle=":", linewidth=1)
        ax.annotate(f"{seconds:g} s", xy=(seconds, 0), xycoords=("data", "axes fraction"), xytext=(3, 3),
                    textcoords="offset points", ha="left", va="bottom", color="#777777", fontsize=8)
    ax.set_xlim(left=0)
    ax.set_title("accuracy against training time (mean over seeds)", fontsize=11)
    ax.set_xlabel(TIME_LABEL)
    ax.set_ylabel(Y_LABEL)
    ax.grid(True, color="#e6e6e6")
    markers = {p.label: MARKERS.get(p.marker, "o") for p in row.points}
    labels = list(dict.fromkeys([p.label for p in row.points] + [c.label for c in row.curves]))
    handles = [Line2D([], [], color=colours[label], marker=markers.get(label, "o"), markeredgecolor="black",
                      label=label) for label in labels]
    if row.reference is not None:
        handles.append(Line2D([], [], color=REFERENCE_COLOR, linestyle="--", label=row.reference[0]))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=9)


def reference_line(ax, reference: tuple[str, float] | None) -> None:
    if reference is None:
        return
    name, value = reference
    ax.axhline(value, color=REFERENCE_COLOR, linestyle="--", linewidth=1.2)
    ax.annotate(f"{name} {value:.2f}", xy=(1, value), xycoords=("axes fraction", "data"), xytext=(-4, 3),
                textcoords="offset points", ha="right", va="bottom", color=REFERENCE_COLOR, fontsize=9)


def save_png(fig, path: str | Path) -> Path:
    """Write the figure as a PNG, atomically and never through a link."""
    from datafree.files import atomic_write

    return atomic_write(path, lambda f: fig.savefig(f, format="png"))


def rgb_array(fig):
    """The rendered figure as an H × W × 3 uint8 array (for TensorBoard)."""
    import numpy as np

    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
