"""Your own model, no data set: a plain-PyTorch tabular teacher distilled without its data.

    python experiments/tabular_own_model.py            # 3 seeds; writes experiments/results/tabular/

The task (fixed): scikit-learn's make_classification(n_samples=8000, n_features=32,
n_informative=16, n_classes=6, n_clusters_per_class=2, random_state=1), standardised with the
training split's statistics, split 80/20 stratified. The teacher, an MLP 32→256→256→6 with
BatchNorm, is trained in plain PyTorch (Adam, 40 epochs) — datafree never sees how. The student
is an MLP 32→48→6. Data-free methods get only the teacher and `input_shape=(32,)` (plus the test
set, to measure); real-data KD and scratch get the training split through a registered data set.
Every method has 10,000 student updates at batch 64 (real-data runs: the same 10,000).
"""
from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import datafree
from datafree.data import stratified_split
from datafree.speed import cpu_name
from datafree.stats import summarize

RESULTS = Path(__file__).parent / "results" / "tabular"
SEEDS = (0, 1, 2)
UPDATES = 10_000
METHODS = {"scratch": 10_000, "kd": 10_000, "ours": 2_000, "dfq": 1_000, "dfad": 2_000}  # steps = 10,000 updates


def task() -> tuple[torch.Tensor, ...]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=8000, n_features=32, n_informative=16, n_classes=6, n_clusters_per_class=2,
                               random_state=1)
    train, test = stratified_split(y, 0.2)
    mean, std = x[train].mean(0), x[train].std(0)
    x = (x - mean) / std
    as_tensors = lambda idx: (torch.tensor(x[idx], dtype=torch.float32), torch.tensor(y[idx]))  # noqa: E731
    return (*as_tensors(train), *as_tensors(test))


def train_teacher(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    teacher = nn.Sequential(nn.Linear(32, 256), nn.BatchNorm1d(256), nn.ReLU(),
                            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Linear(256, 6))
    optimizer = torch.optim.Adam(teacher.parameters(), 1e-3)
    for _ in range(40):
        for idx in torch.randperm(len(x)).split(128):
            loss = nn.functional.cross_entropy(teacher(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return teacher.eval()


def student() -> nn.Module:
    return nn.Sequential(nn.Linear(32, 48), nn.ReLU(), nn.Linear(48, 6))


def main() -> None:
    torch.set_num_threads(2)
    x_train, y_train, x_test, y_test = task()

    @datafree.register_dataset("tabular6")
    def tabular6(**_):  # the real training data, for the real-data baselines only
        spec = datafree.InputSpec((32,), 6, name="tabular6")
        return datafree.Dataset(spec, datafree.Split(x_train, y_train), datafree.Split(x_test, y_test))

    teacher = train_teacher(x_train, y_train, seed=0)
    with torch.no_grad():
        teacher_accuracy = 100 * float((teacher(x_test).argmax(1) == y_test).float().mean())
    print(f"teacher: {teacher_accuracy:.2f}% on {len(y_test)} test rows", file=sys.stderr)
    runs = []
    root = Path("runs") / "tabular_own_model"
    for seed in SEEDS:
        for method, steps in METHODS.items():
            overrides = {"trainer.eval_every": 0, "trainer.seed": seed, "run.overwrite": True,
                         "student.optim.lr": 0.05}
            where = {"data": "tabular6"} if method in ("scratch", "kd") else {"input_shape": (32,),
                                                                               "test_data": (x_test, y_test)}
            torch.manual_seed(seed)
            result = datafree.distill(teacher, student(), method, steps=steps, run_dir=root / f"{method}-s{seed}",
                                      overrides=overrides, quiet=True, **where)
            m = result.metrics
            runs.append({"method": method, "seed": seed, "accuracy": m["student_accuracy"],
                         "agreement": m.get("agreement"), "seconds": m["seconds"], "student_steps": m["student_steps"]})
            print(f"{method} seed {seed}: {m['student_accuracy']:.2f}% in {m['seconds']:.1f} s", file=sys.stderr)
    write(runs, teacher_accuracy)


def write(runs: list[dict], teacher_accuracy: float) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    kd = summarize([r["accuracy"] for r in runs if r["method"] == "kd"])
    lines = ["# Your own tabular model, distilled without its data", "",
             __doc__.split("\n\n")[2].strip().replace("\n", " "), "",
             f"Machine: {cpu_name()}, {torch.get_num_threads()} threads, torch "
             f"{torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}. Teacher: {teacher_accuracy:.2f}%. "
             f"Mean ± std over seeds {', '.join(map(str, SEEDS))}.", "",
             "| method | data | student acc. % | 95% CI | Δ vs real-data KD | agreement % | wall-clock s |",
             "|---|---|---:|---|---:|---:|---:|"]
    for method in METHODS:
        mine = [r for r in runs if r["method"] == method]
        s = summarize([r["accuracy"] for r in mine])
        ci = f"[{s.low:.2f}, {s.high:.2f}]" if s.has_interval else "—"
        data = "real" if method in ("scratch", "kd") else "none"
        agreement = statistics.fmean(r["agreement"] for r in mine)
        seconds = statistics.fmean(r["seconds"] for r in mine)
        lines.append(f"| {method} | {data} | {s.mean:.2f} ± {s.std:.2f} | {ci} | {s.mean - kd.mean:+.2f} | "
                     f"{agreement:.2f} | {seconds:.1f} |")
    lines += ["", "Command: `python experiments/tabular_own_model.py`"]
    (RESULTS / "results.md").write_text("\n".join(lines) + "\n")
    record = {"teacher_accuracy": teacher_accuracy, "runs": runs}
    (RESULTS / "results.json").write_text(json.dumps(record, indent=1) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
