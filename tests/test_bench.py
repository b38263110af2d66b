"""`datafree bench`: a mini suite (2 methods × 1 pair × 2 seeds on digits, a few steps each) runs,
writes results.json, results.md, the plot and its TensorBoard image, and a second invocation runs
nothing new; a changed config re-runs only its own runs, whose old records stay out of the tables; a
run stopped half way continues from its checkpoint; bad suite files fail in one line naming the key;
the tables give confidence intervals, p-values against the reference method and accuracy against
time."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from datafree import api, bench
from datafree.bench.report import results_markdown
from datafree.bench.runner import EVALUATION_KEYS
from datafree.cli import main
from datafree.errors import ConfigError
from datafree.trainer import Trainer

DIGITS = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "digits"
RUN_KEYS = {"method", "pair", "seed", "accuracy", "teacher_accuracy", "agreement", "seconds", "student_steps",
            "synthetic_samples", "real_samples", "params", "fingerprint", "published_accuracy", "evaluations"}


def write_suite(folder: Path, ours_steps: int = 2, extra: str = "", top: str = "") -> Path:
    """The real digits configs, with a width-8 teacher and a few steps per run; `top` adds suite
    keys, `extra` keys of the last table (ours' method overrides)."""
    path = folder / "mini.toml"
    path.write_text(f'''
description = "mini suite for the tests"
{top}
seeds = [0, 1]
overrides = {{ "trainer.steps" = 3, "trainer.batch_size" = 32, "trainer.log_every" = 1, "trainer.image_every" = 0 }}

[teachers.small]
config = "{DIGITS / 'teacher.toml'}"

[teachers.small.overrides]
"teacher.checkpoint" = "{folder / 'teacher.pt'}"
"teacher.args" = {{ width = 8 }}
"trainer.steps" = 40
"trainer.batch_size" = 64

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


@pytest.mark.slow
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
        # Every evaluation (here only the final one: eval_every > steps), with the figures the table reads.
        assert r["evaluations"] and all(set(e) <= set(EVALUATION_KEYS) for e in r["evaluations"])
        assert r["evaluations"][-1]["student_accuracy"] == pytest.approx(r["accuracy"])
        assert r["evaluations"][-1]["student_steps"] == r["student_steps"]
        # the run's own peak (torch alone is hundreds of MB), where /proc tells it
        assert r["peak_memory_mb"] > 100 if sys.platform.startswith("linux") else r["peak_memory_mb"] is None
    kd, ours = runs[0], runs[2]
    assert kd["real_samples"] == 3 * 32 and kd["synthetic_samples"] == 0 and kd["student_steps"] == 3
    assert ours["real_samples"] == 0 and ours["synthetic_samples"] > 0 and ours["student_steps"] == 2 * 5
    assert json.loads((out / "results.json").read_text())["runs"] == runs

    table = (out / "results.md").read_text()
    assert "## small → half" in table and "| **teacher** `digits_cnn` | real |" in table
    mean = sum(r["accuracy"] for r in runs[:2]) / 2
    assert f"| kd | real | {mean:.2f} ± " in table  # mean ± std over the two seeds
    assert "| 95% CI | p vs kd |" in table and "| kd | real |" in table
    kd_row = next(line for line in table.splitlines() if line.startswith("| kd |"))
    ours_row = next(line for line in table.splitlines() if line.startswith("| ours |"))
    assert "| reference |" in kd_row and ("p = " in ours_row or "p < 0.001" in ours_row or "| — |" in ours_row)
    assert "confidence interval" in table and "Welch" in table
    assert "accuracy_vs_time.png" in table
    image = Image.open(out / "accuracy_vs_time.png")
    assert image.size[0] > 1000 and image.size[1] > 300
    events = list((out / "runs" / "suite").glob("events.out.tfevents*"))
    assert events and "suite/accuracy_vs_wall_clock" in tensorboard_tags(out / "runs" / "suite")["images"]
    assert len(list((out / "runs").glob("small_to_half/*/student.pt"))) == 4  # each run in its own run dir

    # Second invocation, through the command line: nothing runs, nothing changes.
    before = (out / "results.json").read_text()
    assert main(["bench", str(suite), "--out", str(out), "--quiet"]) == 0
    assert calls.fresh == ["train-teacher"] + ["distill"] * 4 and not calls.resumed
    assert json.loads((out / "results.json").read_text())["runs"] == json.loads(before)["runs"]


@pytest.mark.slow
def test_a_changed_config_reruns_only_its_runs_never_averaged_with_the_old_and_logging_changes_rerun_nothing(
        tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    bench.run_suite(write_suite(tmp_path), out=out, quiet=True)
    calls = Calls(monkeypatch)
    counted_run = api.run

    def stopped_after_one_run(command, cfg, **kw):
        if calls.fresh:
            raise KeyboardInterrupt
        return counted_run(command, cfg, **kw)

    monkeypatch.setattr(api, "run", stopped_after_one_run)
    with pytest.raises(KeyboardInterrupt):
        bench.run_suite(write_suite(tmp_path, ours_steps=3), out=out, quiet=True)
    ours = [r for r in json.loads((out / "results.json").read_text())["runs"] if r["method"] == "ours"]
    # Stopped half-way: seed 0 ran again; seed 1's old record is kept, marked, and left out of the table.
    assert [(r["seed"], r["student_steps"], r.get("superseded", False)) for r in ours] == [(0, 15, False),
                                                                                          (1, 10, True)]
    table = (out / "results.md").read_text()
    assert f"| ours | synthetic | {ours[0]['accuracy']:.2f} (1/2 seeds) |" in table
    assert "3 of 4 runs finished" in table and "earlier config or teacher, left out until they run again: 1." in table

    monkeypatch.setattr(api, "run", counted_run)
    capsys.readouterr()
    results = bench.run_suite(write_suite(tmp_path, ours_steps=3), out=out)
    assert "config or teacher changed since recorded, running again: ours (seed 1)\n" in capsys.readouterr().out
    assert calls.fresh == ["distill", "distill"]  # ours, both seeds; the teacher and kd are reused
    assert [r["student_steps"] for r in results["runs"] if r["method"] == "ours"] == [15, 15]
    assert not any("superseded" in r for r in results["runs"]) and "left out" not in (out / "results.md").read_text()
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


@pytest.mark.slow
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
    ('sedes = [0]\n', r"unknown suite key 'sedes'; did you mean 'seeds'\?"),
    ('[teachers.t]\nconfig = "nope.toml"\n', r"teachers.t.config not found"),
    ('[teachers.t]\nconfg = "teacher.toml"\n',
     r"unknown suite key 'teachers.t.confg'; did you mean 'teachers.t.config'"),
    ('seeds = [0]\n', r"needs at least one \[\[pairs\]\]"),
    ('seeds = []\n', r"suite key 'seeds' must be a non-empty list"),
    ('seeds = ["a"]\n[[pairs]]\n', r"suite key 'seeds\[0\]' must be an integer"),
    ('[[pairs]]\nmetods = ["kd"]\n', r"unknown suite key 'pairs\[0\].metods'; did you mean 'pairs\[0\].methods'\?"),
    ('[[pairs]]\nmethods = "kd"\n', r"suite key 'pairs\[0\].methods' must be a list"),
    ('[[pairs]]\noverrides = 3\n', r"suite key 'pairs\[0\].overrides' must be a table"),
    ('[pairs]\nname = "p"\n', r"suite key 'pairs' must be a list"),
    ('budgets = [10, -1]\n', r"suite key 'budgets\[1\]' must be a number of seconds > 0"),
    ('budgets = 10\n', r"suite key 'budgets' must be a list"),
    ('time_to = [101]\n', r"suite key 'time_to\[0\]' must be an accuracy in \(0, 100\]"),
    ('reference = "kdd"\n', r"suite key 'reference': unknown method 'kdd'; did you mean 'kd'"),
    ('seeds = [0\n', r"suite file .* is not valid TOML"),
])
def test_bad_suites_fail_naming_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as e:
        bench.load_suite(path)
    assert str(e.value).startswith(str(path)) or "suite file" in str(e.value)  # says which file
    assert "\n" not in str(e.value)


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


def test_a_pair_with_a_misspelt_key_is_refused_naming_it_and_suggesting_the_key(tmp_path):
    path = write_suite(tmp_path)
    path.write_text(path.read_text().replace('methods = ["kd", "ours"]', 'metods = ["kd", "ours"]'))
    with pytest.raises(ConfigError) as e:
        bench.load_suite(path)
    message = str(e.value)
    assert message.startswith(f"{path}: unknown suite key 'pairs[0].metods'; did you mean 'pairs[0].methods'?")


def test_overrides_may_be_nested_tables_or_dotted_keys(tmp_path):
    dotted = bench.load_suite(write_suite(tmp_path))
    path = write_suite(tmp_path)
    text = path.read_text().replace('"trainer.steps" = 3, "trainer.batch_size" = 32,',
                                    'trainer = { steps = 3, batch_size = 32 },')
    path.write_text(text.replace('[pairs.method_overrides.ours]\n"trainer.steps"',
                                 '[pairs.method_overrides.ours.trainer]\n"steps"'))
    nested = bench.load_suite(path)
    assert [r.config.to_dict() for r in nested.runs] == [r.config.to_dict() for r in dotted.runs]
    assert [r.config.trainer.steps for r in nested.runs] == [3, 2, 3, 2]  # seed-major: kd, ours per seed


def test_suite_keys_have_defaults_and_are_read(tmp_path):
    spec = bench.load_suite(write_suite(tmp_path))
    assert (spec.reference, spec.budgets, spec.time_to) == ("kd", [], [])
    spec = bench.load_suite(write_suite(tmp_path, top='reference = "ours"\nbudgets = [1, 2.5]\ntime_to = [90]'))
    assert (spec.reference, spec.budgets, spec.time_to) == ("ours", [1.0, 2.5], [90.0])


def hand_made_results(spec) -> dict:
    """Two seeds of kd and ours with their evaluation curves (seconds, accuracy)."""
    def record(method: str, seed: int, data: str, *curve: tuple[float, float]) -> dict:
        return {"pair": spec.pairs[0].name, "method": method, "seed": seed, "data": data, "accuracy": curve[-1][1],
                "agreement": None, "seconds": curve[-1][0], "student_steps": 30, "synthetic_samples": 0,
                "real_samples": 0, "params": 1000,
                "evaluations": [{"step": i, "seconds": t, "student_steps": i, "student_accuracy": a}
                                for i, (t, a) in enumerate(curve)]}

    return {"teachers": {"small": {"accuracy": 95.0, "seconds": 5.0, "steps": 40, "real_samples": 2560, "params": 9}},
            "runs": [record("kd", 0, "real", (0.5, 40.0), (2.0, 80.0), (6.0, 92.0)),
                     record("kd", 1, "real", (0.8, 50.0), (3.0, 85.0), (4.0, 91.0)),
                     record("ours", 0, "synthetic", (1.0, 30.0), (7.0, 70.0)),
                     record("ours", 1, "synthetic", (2.0, 20.0), (8.0, 60.0))]}


def table_row(table: str, method: str) -> dict[str, str]:
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| method |"))
    row = next(line for line in lines if line.startswith(f"| {method} |"))
    return dict(zip([c.strip() for c in header.strip("|").split("|")], [c.strip() for c in row.strip("|").split("|")]))


def test_budgets_and_time_to_give_accuracy_against_time_columns(tmp_path):
    spec = bench.load_suite(write_suite(tmp_path, top="budgets = [1, 5]\ntime_to = [50, 90]"))
    table = results_markdown(spec, hand_made_results(spec))
    kd, ours = table_row(table, "kd"), table_row(table, "ours")
    # The last evaluation at or before the budget, mean over seeds; k/n when only k runs had one by then.
    assert kd["acc. @1 s"] == "45.00" and ours["acc. @1 s"] == "30.00 (1/2)"
    assert kd["acc. @5 s"] == "85.50" and ours["acc. @5 s"] == "25.00"
    # The first evaluation at or above the threshold, mean over the runs that reached it.
    assert kd["s to 50%"] == "1.4" and ours["s to 50%"] == "7.5"
    assert kd["s to 90%"] == "5.0" and ours["s to 90%"] == "— (0/2)"
    assert "acc. @B s" in table and "s to X%" in table  # explained
    teacher = next(line for line in table.splitlines() if line.startswith("| **teacher**"))
    assert teacher.count("|") == len(kd) + 1  # as many cells as the header


def test_tables_give_the_confidence_interval_and_welch_p_against_the_reference(tmp_path):
    from datafree.stats import format_p, summarize, welch_p

    spec = bench.load_suite(write_suite(tmp_path))
    table = results_markdown(spec, hand_made_results(spec))
    kd, ours = table_row(table, "kd"), table_row(table, "ours")
    s = summarize([92.0, 91.0])
    assert kd["student acc. %"] == "91.50 ± 0.71" and kd["95% CI"] == f"[{s.low:.2f}, {s.high:.2f}]"
    assert kd["p vs kd"] == "reference"
    assert ours["p vs kd"] == format_p(welch_p([70.0, 60.0], [92.0, 91.0])) and ours["p vs kd"].startswith("p ")
    assert "acc. @" not in table and "s to " not in table  # no budgets, no thresholds: no such columns
    assert "95% confidence interval" in table and "Welch" in table and "3 seeds" in table

    # A reference the pair does not run: no p-value column for that pair, and the table says why.
    spec = bench.load_suite(write_suite(tmp_path, top='reference = "dfad"'))
    table = results_markdown(spec, hand_made_results(spec))
    ours = table_row(table, "ours")
    assert not any(h.startswith("p vs") for h in ours) and "does not run the reference method `dfad`" in table
    assert ours["95% CI"].startswith("[")
