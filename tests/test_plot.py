"""datafree.plot (matplotlib): the step-wise mean curve, and the suite figure drawn from a tiny
hand-made suite result — a PNG of plausible size with one row of two panels per pair."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from datafree import plot
from datafree.bench.report import plot_rows
from datafree.bench.suite import PairSpec, Suite


def test_mean_step_curve_holds_each_value_until_the_next_evaluation():
    a = [(1.0, 10.0), (3.0, 30.0)]
    b = [(2.0, 20.0), (4.0, 40.0), (5.0, 50.0)]
    times, means = plot.mean_step_curve([a, b])
    # From 2 s on both runs have a value: a holds 10 until 3 s and 30 after; b ends at 50.
    assert times == [2.0, 3.0, 4.0, 5.0]
    assert means == pytest.approx([15.0, 25.0, 35.0, 40.0])
    assert plot.mean_step_curve([]) == ([], [])
    assert plot.mean_step_curve([[(3.0, 7.0)]]) == ([3.0], [7.0])


def evaluations(*points: tuple[float, float]) -> list[dict]:
    return [{"step": 10 * (i + 1), "seconds": t, "student_steps": 10 * (i + 1), "student_accuracy": acc}
            for i, (t, acc) in enumerate(points)]


def run(pair: str, method: str, seed: int, data: str, seconds: float, *points: tuple[float, float]) -> dict:
    return {"pair": pair, "method": method, "seed": seed, "data": data, "accuracy": points[-1][1], "seconds": seconds,
            "student_steps": 30, "synthetic_samples": 0 if data == "real" else 960,
            "real_samples": 960 if data == "real" else 0, "params": 1000, "evaluations": evaluations(*points)}


def tiny_suite(pairs: int) -> tuple[Suite, dict]:
    names = ["a → b", "a → c"][:pairs]
    spec = Suite("tiny", Path("tiny.toml"), "", {}, [PairSpec(n, "t", ["kd", "ours"], [0, 1]) for n in names],
                 budgets=[2.0])
    runs = []
    for n in names:
        runs += [run(n, "kd", 0, "real", 3.1, (1.0, 60.0), (3.0, 90.0)),
                 run(n, "kd", 1, "real", 3.3, (1.2, 55.0), (3.2, 91.0)),
                 run(n, "ours", 0, "synthetic", 6.0, (2.0, 40.0), (6.0, 85.0)),
                 {"pair": n, "method": "ours", "seed": 1, "data": "synthetic", "error": "diverged"}]
    return spec, {"teachers": {"t": {"accuracy": 95.0}}, "runs": runs}


@pytest.mark.parametrize("pairs", [1, 2])
def test_the_suite_figure_has_a_row_of_two_panels_per_pair(tmp_path, pairs):
    spec, results = tiny_suite(pairs)
    rows = plot_rows(spec, results)
    assert len(rows) == pairs and [p.label for p in rows[0].points] == ["kd", "ours"]
    assert [p.marker for p in rows[0].points] == ["square", "circle"]  # kd reads real data
    assert rows[0].reference == ("teacher", 95.0) and [c.label for c in rows[0].curves] == ["kd", "ours"]

    fig = plot.figure(rows)
    assert len(fig.axes) == 2 * pairs
    assert {ax.get_subplotspec().get_geometry()[:2] for ax in fig.axes} == {(pairs, 2)}
    path = plot.save_png(fig, tmp_path / "plot.png")
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 1000 <= width <= 2000 and 350 * pairs <= height <= 500 * pairs
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temporary file left
    assert plot.rgb_array(fig).shape == (height, width, 3)


def test_a_suite_without_finished_runs_gives_a_small_note(tmp_path):
    spec, _ = tiny_suite(1)
    rows = plot_rows(spec, {"teachers": {}, "runs": []})
    assert rows == []
    path = plot.save_png(plot.figure(rows), tmp_path / "plot.png")
    with Image.open(path) as image:
        assert image.size[0] > 100 and image.size[1] > 50


def test_the_png_replaces_a_link_instead_of_writing_through_it(tmp_path):
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me")
    link = tmp_path / "plot.png"
    link.symlink_to(target)
    plot.save_png(plot.figure([]), link)
    assert target.read_text() == "keep me" and not link.is_symlink()
