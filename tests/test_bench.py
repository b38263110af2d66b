"""`datafree bench`: a mini suite (2 methods × 1 pair × 2 seeds on digits, a few steps each) runs,
writes results.json, results.md, the plot and its TensorBoard image, and a second invocation runs
nothing new; a changed config re-runs only its own runs; a run stopped half way continues from
its checkpoint; bad suite files fail in one line naming the key."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from PIL import Image

from datafree import api, bench
from datafree.cli import main
from datafree.errors import ConfigError
from datafree.plot import Panel, Point, nice_ticks, scatter_panels
from datafree.trainer import Trainer

DIGITS = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "digits"
RUN_KEYS = {"method", "pair", "seed", "accuracy", "teacher_accuracy", "agreement", "seconds", "student_steps",
            "synthetic_samples", "real_samples", "params", "fingerprint", "published_accuracy"}


def write_suite(folder: Path, ours_steps: int = 2, extra: str = "") -> Path:
    """The real digits configs, with a width-8 teacher and a few steps per run."""
    path = folder / "mini.toml"
    path.write_text(f'''
description = "mini suite for the tests"
seeds = [0, 1]
overrides = {{ "trainer.steps" = 3, "trainer.batch_size" = 32, "trainer.log_every" = 1, "trainer.image_every" = 0 }}

[teachers.small]
config = "{DIGITS / 'teacher.toml'}"
overrides = {{ "teacher.checkpoint" = "{folder / 'teacher.pt'}", "teacher.args" = {{ width = 8 }}, "trainer.steps" = 40, "trainer.batch_size" = 64 }}

[[pairs]]
name = "small → half"
teacher = "small"
configs = "{DIGITS}/{{method}}.toml"
methods = ["kd", "ours"]
[pairs.method_overrides.ours]
"trainer.steps" = {ours_steps}
{extra}''')
    return path


class Calls:
    """Counts the runs the bench starts afresh and the ones it resumes."""

    def __init__(self, monkeypatch):
        self.fresh, self.resumed, self.resuming = [], [], False
        run, resume = api.run, api.resume

        def counted_run(command, cfg, **kw):
            if not self.resuming:  # api.resume goes through api.run too
                self.fresh.append(command)
            return run(command, cfg, **kw)

        def counted_resume(run_dir, **kw):
            self.resumed.append(run_dir)
            self.resuming = True
            try:
                return resume(run_dir, **kw)
            finally:
                self.resuming = False

        monkeypatch.setattr(api, "run", counted_run)
        monkeypatch.setattr(api, "resume", counted_resume)


def test_mini_suite_writes_results_table_plot_and_resumes_without_rerunning(tmp_path, monkeypatch):
    suite, out = write_suite(tmp_path), tmp_path / "results"
    calls = Calls(monkeypatch)
    results = bench.run_suite(suite, out=out, quiet=True)

    assert calls.fresh == ["train-teacher"] + ["distill"] * 4 and not calls.resumed
    assert (tmp_path / "teacher.pt").is_file()
    runs = results["runs"]
    assert [(r["method"], r["seed"]) for r in runs] == [("kd", 0), ("kd", 1), ("ours", 0), ("ours", 1)]
    for r in runs:
        assert RUN_KEYS <= set(r) and 0 <= r["accuracy"] <= 100
        assert r["teacher_accuracy"] == pytest.approx(results["teachers"]["small"]["accuracy"])
    kd, ours = runs[0], runs[2]
    assert kd["real_samples"] == 3 * 32 and kd["synthetic_samples"] == 0 and kd["student_steps"] == 3
    assert ours["real_samples"] == 0 and ours["synthetic_samples"] > 0 and ours["student_steps"] == 2 * 5
    assert json.loads((out / "results.json").read_text())["runs"] == runs

    table = (out / "results.md").read_text()
    assert "## small → half" in table and "| **teacher** `digits_cnn` | real |" in table
    mean = sum(r["accuracy"] for r in runs[:2]) / 2
    assert f"| kd | real | {mean:.2f} ± " in table  # mean ± std over the two seeds
    assert "accuracy_vs_time.png" in table
    image = Image.open(out / "accuracy_vs_time.png")
    assert image.size[0] > 400 and image.size[1] > 300
    events = list((out / "runs" / "suite").glob("events.out.tfevents*"))
    assert events and "suite/accuracy_vs_wall_clock" in tensorboard_tags(out / "runs" / "suite")["images"]
    assert len(list((out / "runs").glob("small_to_half/*/student.pt"))) == 4  # each run in its own run dir

    # Second invocation, through the command line: nothing runs, nothing changes.
    before = (out / "results.json").read_text()
    assert main(["bench", str(suite), "--out", str(out), "--quiet"]) == 0
    assert calls.fresh == ["train-teacher"] + ["distill"] * 4 and not calls.resumed
    assert json.loads((out / "results.json").read_text())["runs"] == json.loads(before)["runs"]


def test_a_changed_config_reruns_only_its_runs_and_logging_changes_rerun_nothing(tmp_path, monkeypatch):
    out = tmp_path / "results"
    bench.run_suite(write_suite(tmp_path), out=out, quiet=True)
    calls = Calls(monkeypatch)
    bench.run_suite(write_suite(tmp_path, ours_steps=3), out=out, quiet=True)
    assert calls.fresh == ["distill", "distill"]  # ours, both seeds; the teacher is reused
    results = json.loads((out / "results.json").read_text())
    assert [r["student_steps"] for r in results["runs"] if r["method"] == "ours"] == [15, 15]
    # How often a run logs or evaluates cannot change its result: no re-run.
    bench.run_suite(write_suite(tmp_path, ours_steps=3, extra='"trainer.log_every" = 3\n'), out=out, quiet=True)
    assert calls.fresh == ["distill", "distill"]


def test_a_recipe_edited_in_its_method_file_changes_the_fingerprint(monkeypatch):
    import dataclasses

    from datafree.config import load
    from datafree.methods import METHODS

    config = load(overrides={"method.name": "dafl"}).to_dict()
    before = bench.fingerprint(config, "digest")
    dafl = METHODS.get("dafl")
    edited = dataclasses.replace(dafl, terms={**dafl.terms, "generator": {**dafl.terms["generator"], "balance": 5.0}})
    monkeypatch.setitem(METHODS._entries, "dafl", edited)
    assert bench.fingerprint(config, "digest") != before


def test_a_run_stopped_half_way_continues_from_its_checkpoint(tmp_path, monkeypatch):
    suite = write_suite(tmp_path, ours_steps=4, extra='"trainer.checkpoint_every" = 2\n')
    out = tmp_path / "results"
    save = Trainer.save_checkpoint

    def crash_after_first_checkpoint(self):
        path = save(self)
        if self.cfg.method.name == "ours" and self.step == 2:
            raise RuntimeError("simulated crash")
        return path

    with monkeypatch.context() as m:
        m.setattr(Trainer, "save_checkpoint", crash_after_first_checkpoint)
        with pytest.raises(RuntimeError, match="simulated crash"):
            bench.run_suite(suite, out=out, quiet=True)
    recorded = json.loads((out / "results.json").read_text())["runs"]
    assert [r["method"] for r in recorded] == ["kd"]  # kd seed 0 finished before ours seed 0 crashed

    calls = Calls(monkeypatch)
    results = bench.run_suite(suite, out=out, quiet=True)
    assert [Path(p).name for p in calls.resumed] == ["ours-s0"] and calls.fresh == ["distill"] * 2
    ours0 = next(r for r in results["runs"] if (r["method"], r["seed"]) == ("ours", 0))
    assert ours0["student_steps"] == 4 * 5 and ours0["accuracy"] >= 0


def tensorboard_tags(log_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return acc.Tags()


@pytest.mark.parametrize("text, message", [
    ('seeds = [0]\n[[pairs]]\nname = "p"\n', r"pairs\[0\] needs 'teacher'"),
    ('sedes = [0]\n', r"unknown suite key 'sedes'"),
    ('[teachers.t]\nconfig = "nope.toml"\n', r"teachers.t.config not found"),
    ('seeds = [0]\n', r"needs at least one \[\[pairs\]\]"),
    ('seeds = ["a"]\n[[pairs]]\n', r"'seeds' must be a list of integers"),
])
def test_bad_suites_fail_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        bench.load_suite(path)


def test_pairs_whose_names_share_a_run_folder_are_refused(tmp_path):
    path = write_suite(tmp_path)
    text = path.read_text()
    second = text[text.index("[[pairs]]"):].replace('name = "small → half"', 'name = "small to half"')
    path.write_text(text + "\n" + second)
    with pytest.raises(ConfigError, match=r"pairs 'small → half' and 'small to half' would share the run folder"):
        bench.load_suite(path)


def test_suite_runs_are_checked_against_their_configs_before_anything_runs(tmp_path):
    path = write_suite(tmp_path)
    text = path.read_text()
    path.write_text(text.replace('methods = ["kd", "ours"]', 'methods = ["kd", "oursx"]'))
    with pytest.raises(ConfigError, match="unknown method 'oursx'; did you mean 'ours'"):
        bench.load_suite(path)
    path.write_text(text.replace('teacher = "small"', 'teacher = "big"'))
    with pytest.raises(ConfigError, match="'big' is not a \\[teachers\\] entry"):
        bench.load_suite(path)
    path.write_text(text.replace('"trainer.steps" = 2', '"trainer.stepz" = 2'))
    with pytest.raises(ConfigError, match="unknown config key 'trainer.stepz'"):
        bench.load_suite(path)
    with pytest.raises(ConfigError, match="unknown suite 'no_such_suite'.*digits"):
        bench.load_suite("no_such_suite")
    assert main(["bench", "no_such_suite"]) == 2


@pytest.mark.parametrize("low, high", [(0, 57), (92.3, 99.1), (0, 0.4), (12, 1840), (50, 50)])
def test_nice_ticks_cover_the_range_with_round_steps(low, high):
    ticks = nice_ticks(low, high)
    step = ticks[1] - ticks[0]
    assert ticks[0] <= low and ticks[-1] >= high and 3 <= len(ticks) <= 8
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert round(mantissa, 6) in (1, 2, 5)
    assert all(abs((b - a) - step) < 1e-9 for a, b in zip(ticks, ticks[1:]))


def test_plot_draws_each_method_in_its_own_colour_at_its_place(tmp_path):
    panel = Panel("a → b", [Point("fast", 10, 90, 1), Point("slow", 50, 60, 0, marker="square")], ("teacher", 95))
    image = scatter_panels([panel]).convert("RGB")
    colours = {c for _, c in image.getcolors(1 << 20)}
    assert (0x1F, 0x77, 0xB4) in colours and (0xFF, 0x7F, 0x0E) in colours  # the first two palette colours

    def column_of(colour):  # mean x of the pixels of one colour inside the plot area (left of the legend)
        xs = [x for x in range(80, 690) for y in range(44, 424) if image.getpixel((x, y)) == colour]
        return sum(xs) / len(xs)

    assert column_of((0x1F, 0x77, 0xB4)) < column_of((0xFF, 0x7F, 0x0E))  # 10 s left of 50 s
