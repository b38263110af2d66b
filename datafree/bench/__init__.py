"""`datafree bench SUITE`: train the suite's teachers, run its methods × pairs × seeds, and write
`results.json`, `results.md` (a table per pair) and `accuracy_vs_time.png` (logged to TensorBoard too).

A suite is a TOML file, `experiments/suites/<name>.toml` or any path. It is read like a run config
(`datafree.config.build`): every key and type is checked and a typo is named with its dotted key
(`pairs[0].metods`, did you mean `pairs[0].methods`?). Config paths in it are relative to the
suite file; `overrides` tables take dotted config keys or nested tables:

    description = "what this suite measures"
    seeds = [0, 1, 2]                              # every pair's seeds unless the pair names its own (default [0])
    reference = "kd"                               # p-values of every other method are against this one (default "kd")
    budgets = [10, 60]                             # optional: accuracy at 10 s and at 60 s of training (default [])
    time_to = [90, 95]                             # optional: seconds until a run first reaches 90 %, 95 % (default [])
    overrides = { "trainer.threads" = 2 }          # optional: dotted config keys for every run

    [teachers.digits_cnn]                          # trained first, once; reused while its checkpoint exists
    config = "../configs/digits/teacher.toml"      # must set teacher.checkpoint (where it is saved)
    overrides = {}                                 # optional

    [[pairs]]
    name = "digits_cnn-digits_cnn_half"            # table heading and run folder
    teacher = "digits_cnn"                         # a key of [teachers]; its checkpoint is every run's teacher
    configs = "../configs/digits/{method}.toml"    # one distillation config per method
    methods = ["scratch", "kd", "dfad", "ours"]
    seeds = [0, 1]                                 # optional
    overrides = {}                                 # optional: every run of this pair
    [pairs.method_overrides.dfad]                  # optional: one method of this pair
    "trainer.steps" = 300

The table of a pair gives, per method, the mean ± standard deviation over seeds, the 95%
confidence interval of the mean, Welch's t-test p-value against the `reference` method (when the
pair runs it), the accuracy at each of the `budgets` and the time to each `time_to` accuracy
(both read from every evaluation of each run: `trainer.eval_every`). The plot has a row per pair:
accuracy against wall-clock per method, and accuracy against training time.

Results go to `experiments/results/<suite>/` (or `out`); run directories and TensorBoard files to
its `runs/` (git-ignored): `tensorboard --logdir experiments/results/<suite>/runs` shows every run
in the HPARAMS tab and the suite's plot under IMAGES.

Resuming: `results.json` is rewritten after every run, and each record carries a fingerprint of the
run's resolved config and of its teacher file. Invoked again, the bench skips every run whose record
has the same fingerprint, runs again those whose config (or teacher) changed since (their old
records stay in `results.json`, marked superseded and out of the tables, until replaced: a suite
stopped half way never averages two settings' runs), and a run that was stopped half way continues
exactly from its last checkpoint when its config is unchanged (otherwise it restarts). The
fingerprint includes the loss weights the method registers in datafree/methods/, so editing a recipe
there re-runs that method too. Settings that cannot change a result (logging, evaluation and
checkpoint frequency, device, data root, the published figures) are left out of the fingerprint;
neither are the suite's `reference`, `budgets` and `time_to`, which only change the table.

Runs follow one another in one process; each record keeps the run's own peak resident memory
(Linux), and the memory a finished run freed is handed back before the next one starts.

Modules: `suite` (the file, checked and resolved into runs), `runner` (teachers, runs,
fingerprints, resuming), `memory` (each run's peak, handing freed memory back), `report`
(results.json, results.md, the plot, TensorBoard).
"""
from __future__ import annotations

from datafree.bench.report import PLOT_FILE, results_markdown, write_outputs
from datafree.bench.runner import RESULTS_FORMAT, fingerprint, run_suite
from datafree.bench.suite import (
           PairSpec,
           RunSpec,
           Suite,
           SuiteFile,
           TeacherSpec,
           find_suite,
           load_suite,
)

__all__ = ["PLOT_FILE", "RESULTS_FORMAT", "PairSpec", "RunSpec", "Suite", "SuiteFile", "TeacherSpec", "find_suite",
           "fingerprint", "load_suite", "results_markdown", "run_suite", "write_outputs"]
