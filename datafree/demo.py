"""The main job on the embedded default (scikit-learn digits, no download, a few minutes on 2 CPU
cores): train a teacher, distill it with real data (Hinton KD) and without any data (our
default recipe), and print the three accuracies side by side."""
from __future__ import annotations

import time
from pathlib import Path

from datafree import api


def run_demo(run_root: str | Path | None = None, quiet: bool = False) -> list[dict]:
    root = Path(run_root or f"runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    say = (lambda text: None) if quiet else print
    say(f"datafree demo: digits (8x8, 10 classes, 1347 train / 450 test), runs under {root}/")
    say("1/3 training the teacher on real data ...")
    teacher = api.train_teacher("digits_cnn", "digits", run_dir=root / "teacher", quiet=quiet)
    say("2/3 real-data KD student (Hinton KD, uses the training images) ...")
    kd = api.distill(teacher.checkpoint, "digits_cnn_half", method="kd", run_dir=root / "kd", quiet=quiet)
    say("3/3 data-free student (method 'ours': no training image is ever seen) ...")
    free = api.distill(teacher.checkpoint, "digits_cnn_half", method="ours", run_dir=root / "ours", quiet=quiet)
    rows = [
        {"model": "teacher digits_cnn (real data)", "accuracy": teacher.metrics["student_accuracy"],
         "agreement": None, "parameters": teacher.metrics["student_parameters"], "seconds": teacher.metrics["seconds"]},
        {"model": "student digits_cnn_half, KD (real data)", "accuracy": kd.metrics["student_accuracy"],
         "agreement": kd.metrics["agreement"], "parameters": kd.metrics["student_parameters"],
         "seconds": kd.metrics["seconds"]},
        {"model": "student digits_cnn_half, data-free (ours)", "accuracy": free.metrics["student_accuracy"],
         "agreement": free.metrics["agreement"], "parameters": free.metrics["student_parameters"],
         "seconds": free.metrics["seconds"]},
    ]
    print(f"\n{'model':<44}{'params':>9}{'test acc':>10}{'agrees w/ teacher':>19}{'train s':>9}")
    for r in rows:
        agreement = f"{r['agreement']:.2f}%" if r["agreement"] is not None else "-"
        print(f"{r['model']:<44}{r['parameters']:>9,}{r['accuracy']:>9.2f}%{agreement:>19}{r['seconds']:>9.1f}")
    print(f"\nTensorBoard: tensorboard --logdir {root}")
    return rows
