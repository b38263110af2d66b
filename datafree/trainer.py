"""The one training loop, for every method and all three paths.

Per iteration each player takes its turn with its own optimizer: the generator (g_steps updates),
then the discriminator (d_steps), then the student (s_steps). An update draws a batch, sums the
method's weighted loss terms for that player, checks them for NaN/Inf and steps that player's
optimizer alone; every other network is frozen for it (requires_grad off). The teacher is frozen
and in eval mode throughout. The student stays in train mode, so its BatchNorm running statistics
also follow the generator's batches, as in DFAD's code (zju-vipa's synthesizers switch it to eval
mode for generator updates; we have not compared the two). Around the loop: logging, evaluation
on the real test set, synthetic-batch diagnostics and resumable checkpoints.
"""
from __future__ import annotations

import contextlib
import math
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from datafree import checkpoint, diagnostics
from datafree.batch import Batch, Nets
from datafree.build import (build_discriminator, build_generator, check_attention, check_teacher, feature_layers,
                            term_captures)
from datafree.config import Config, OptimConfig
from datafree.data import BatchStream, Dataset, eval_batches
from datafree.distributed import (Dist, any_rank, average_gradients, broadcast_buffers, gather_objects,
                                  mean_across_ranks, sum_across_ranks, wrap)
from datafree.errors import ConfigError, DivergenceError
from datafree.hooks import Probe
from datafree.methods import METHODS, PLAYERS
from datafree.methods.terms import TERMS
from datafree.models import check_model_io, count_parameters, eval_mode
from datafree.monitor import Monitor
from datafree.synthetic import ReplayPool, SyntheticSource, build_augmentation
from discriminators import DISCRIMINATORS
from discriminators.losses import GAN_LOSSES


class Interrupted(Exception):
    """SIGINT/SIGTERM: the run saved a checkpoint at `step` and stopped."""

    def __init__(self, step: int, path: Path | None) -> None:
        super().__init__(f"interrupted at step {step}")
        self.step, self.path = step, path


def pick_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{d.local_rank}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"config key 'trainer.device' is {name!r} but no CUDA device is available; use 'cpu' or 'auto'")
    if device.type == "cuda" and device.index is None and d.enabled:  # under torchrun: this process's GPU
        device = torch.device("cuda", d.local_rank)
    return device


def build_optimizer(cfg: OptimConfig, params: list[nn.Parameter], total_steps: int):
    if cfg.name == "sgd":
        opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    else:
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        opt = cls(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:  # linear warm-up, then cosine to zero (or constant)
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Trainer:
    def __init__(self, cfg: Config, dataset: Dataset, student: nn.Module, teacher: nn.Module | None,
                 run_dir: Path | None, dist: Dist = Dist(), notes: dict[str, Any] | None = None) -> None:
        self.cfg, self.dataset, self.info, self.dist, self.run_dir = cfg, dataset, dataset.info, dist, run_dir
        self.notes = dict(notes or {})  # recorded in checkpoints (e.g. the teacher file's digest)
        tc = cfg.trainer
        self.method = METHODS.get(cfg.method.name)
        self.weights = self.method.weights(cfg.method.terms)
        self.players = [p for p in PLAYERS if self.weights[p]]
        self.repeats = {"generator": tc.g_steps, "discriminator": tc.d_steps, "student": tc.s_steps}
        if "student" not in self.players:
            raise ConfigError(f"method {self.method.name!r} has no student term left; check method.terms.student")
        self.device = pick_device(tc.device, dist)
        if tc.threads:
            torch.set_num_threads(tc.threads)
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tc.precision]
        shape = self.info.input_shape
        self.memory_format = torch.channels_last if tc.channels_last and len(shape) == 3 else torch.contiguous_format

        # --- networks ---------------------------------------------------------------------
        needs_teacher = any(t != "ce" for p in self.players for t in self.weights[p])
        if needs_teacher and teacher is None:
            raise ConfigError(f"method {self.method.name!r} needs a teacher: pass --teacher teacher.pt")
        if teacher is not None:
            check_teacher(teacher, student, self.info)  # before check_model_io: it names both class counts
        check_model_io(student, cfg.student.name, self.info.num_classes, shape)
        if teacher is not None:
            teacher = teacher.to(self.device, memory_format=self.memory_format).eval().requires_grad_(False)
        self.teacher = teacher
        self.student = student.to(self.device, memory_format=self.memory_format).train()
        self.generator = (build_generator(cfg.generator, self.info, self.device, self.memory_format)
                          if self.method.data == "synthetic" else None)
        uses_features = "discriminator" in self.players and DISCRIMINATORS.get(cfg.discriminator.name).uses_features
        layers = feature_layers(cfg.discriminator, self.teacher, self.student, self.info) if uses_features else ("", "")
        self.discriminator = (build_discriminator(cfg.discriminator, self.info, self.teacher, self.student, layers,
                                                  self.device) if "discriminator" in self.players else None)
        self.gan_loss = GAN_LOSSES.get(cfg.discriminator.loss) if self.discriminator is not None else None

        # DDP wrappers (identity in a single process); torch.compile on top if asked.
        self.student_ddp = wrap(self.student, dist, self.device)
        self.generator_ddp = wrap(self.generator, dist, self.device) if self.generator is not None else None
        self.discriminator_ddp = (wrap(self.discriminator, dist, self.device, ignore=[
            p for m in self.discriminator.student_side_modules() for p in m.parameters()])
            if self.discriminator is not None else None)
        compile_ = torch.compile if tc.compile else (lambda m: m)
        self.student_probe = Probe(compile_(self.student_ddp), shape, layers[1], inner=self.student)
        self.teacher_probe = (Probe(compile_(self.teacher), shape, layers[0], inner=self.teacher)
                              if self.teacher is not None else None)
        self.captures = term_captures({p: self.weights[p] for p in self.players}, self.info, self.discriminator)
        if "stages" in self.captures["student"]["student"]:
            check_attention(self.teacher_probe, self.student_probe, self.info, self.device)

        # --- one optimizer (and scheduler, and fp16 scaler) per player ----------------------
        adapter_params = [p for m in (self.discriminator.student_side_modules() if self.discriminator else []) for p in m.parameters()]
        adapter_ids = {id(p) for p in adapter_params}
        self.params = {
            "student": list(self.student.parameters()) + adapter_params,
            "generator": list(self.generator.parameters()) if self.generator is not None else [],
            "discriminator": [p for p in self.discriminator.parameters() if id(p) not in adapter_ids] if self.discriminator else [],
        }
        self.adapter_params = adapter_params
        self.optim_cfg = {"student": cfg.student.optim, "generator": cfg.generator.optim, "discriminator": cfg.discriminator.optim}
        self.optimizers, self.schedulers, self.scalers = {}, {}, {}
        for p in self.players:
            self.optimizers[p], self.schedulers[p] = build_optimizer(self.optim_cfg[p], self.params[p], tc.steps)
            self.scalers[p] = torch.amp.GradScaler(self.device.type, enabled=tc.precision == "fp16")
        if tc.precision == "fp16":  # a scaler skips steps until it finds its scale; the scheduler need not warn
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")

        # --- data ---------------------------------------------------------------------------
        torch.manual_seed(tc.seed + 1_000 * dist.rank)  # every rank draws its own noise
        self.stream, self.synthetic, self.pool = None, None, None
        if self.method.data == "real":
            self.stream = BatchStream(dataset.train, self.info, tc.batch_size, self.device, tc.seed,
                                      augment=cfg.data.augment, rank=dist.rank, world_size=dist.world_size)
        else:
            gc = cfg.generator
            self.pool = ReplayPool(gc.replay_size) if gc.replay_size else None
            self.synthetic = SyntheticSource(self.generator, tc.batch_size, self.pool, gc.replay_fraction,
                                             build_augmentation(gc.augment, shape))
        self.collapse = diagnostics.CollapseDetector(cfg.generator.collapse_entropy, cfg.generator.collapse_diversity)

        # --- progress -----------------------------------------------------------------------
        self.step = 0
        self.counters = {"student_steps": 0, "synthetic_samples": 0, "real_samples": 0, "seconds": 0.0}
        self.sums: dict[str, torch.Tensor] = {}  # loss terms summed since the last log line
        self.counts: dict[str, int] = {}
        self.teacher_test_predictions: torch.Tensor | None = None
        self.last_eval: dict[str, float] = {}
        self.stop_signal: int | None = None
        self.monitor: Monitor | None = None

    # ------------------------------------------------------------------------------------------
    # One update of one player

    def nets_for(self, player: str) -> Nets:
        return Nets(self.teacher_probe, self.student_probe,
                    self.discriminator_ddp if player == "discriminator" else self.discriminator, self.gan_loss)

    def set_trainable(self, player: str) -> None:
        for owner, params in self.params.items():
            for p in params:
                p.requires_grad_(owner == player)
        if self.discriminator is not None:  # spectral norm's power iteration runs in its own updates only
            self.discriminator.train(player == "discriminator")

    def make_batch(self, player: str) -> Batch:
        n = self.cfg.trainer.batch_size
        nets, captures, T = self.nets_for(player), self.captures[player], self.cfg.method.temperature
        if player == "generator":
            x, sampled = self.generator.sample(n, forward=self.generator_ddp)
            self.counters["synthetic_samples"] += n
            x = x.float().contiguous(memory_format=self.memory_format)  # fp32 samples for the image priors
            return Batch(player, x, nets, captures, T, sampled_labels=sampled)
        if self.stream is not None:
            x, y = next(self.stream)
            self.counters["real_samples"] += n
            return Batch(player, x.contiguous(memory_format=self.memory_format), nets, captures, T, labels=y)
        x, n_fresh = self.synthetic.batch()
        self.counters["synthetic_samples"] += n_fresh
        return Batch(player, x.contiguous(memory_format=self.memory_format), nets, captures, T)

    def update(self, player: str) -> dict[str, torch.Tensor]:
        self.set_trainable(player)
        with self.autocast(), self.no_sync_except(player):
            batch = self.make_batch(player)  # the generator's forward pass runs in reduced precision too
            terms = {name: weight * TERMS.get(name).fn(batch) for name, weight in self.weights[player].items()}
            total = sum(terms.values())
        if any_rank(~torch.isfinite(total.detach()), self.dist):  # a NaN on one rank stops them all
            bad = next((k for k, v in terms.items() if not torch.isfinite(v.detach())), None)
            if bad is None and torch.isfinite(total.detach()):
                raise DivergenceError(f"step {self.step + 1}: a loss of the {player} is not finite on another process; "
                                      f"the run stopped; {self.last_good_checkpoint()} (see that process's error)")
            bad = bad or "total"
            raise DivergenceError(
                f"step {self.step + 1}: loss term {bad!r} of the {player} is {float(terms.get(bad, total).detach()):.4g}; "
                f"the run stopped; {self.last_good_checkpoint()} (lower the learning rate or that term's weight)"
            )
        optimizer, scaler = self.optimizers[player], self.scalers[player]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        if player == "student":
            average_gradients(self.adapter_params, self.dist)
            self.counters["student_steps"] += 1
        clip = self.optim_cfg[player].grad_clip
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(self.params[player], clip)
        scaler.step(optimizer)
        scaler.update()
        out = {f"loss/{player}/{k}": v.detach().float() for k, v in terms.items()}
        out[f"loss/{player}/total"] = total.detach().float()
        out.update({k: v.detach().float() for k, v in batch.diagnostics.items()})
        return out

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def no_sync_except(self, player: str):
        """DDP modules of the players not being updated run forward without preparing a
        gradient all-reduce (their parameters get no gradient in this update)."""
        stack = contextlib.ExitStack()
        if self.dist.enabled:
            for owner, module in (("student", self.student_ddp), ("generator", self.generator_ddp),
                                  ("discriminator", self.discriminator_ddp)):
                if owner != player and module is not None and hasattr(module, "no_sync"):
                    stack.enter_context(module.no_sync())
        return stack

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self, monitor: Monitor) -> dict[str, float]:
        tc = self.cfg.trainer
        self.monitor = monitor
        previous = {s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)} if self.can_trap_signals() else {}
        started, last_log_time, last_log_samples = time.perf_counter(), time.perf_counter(), self.samples_seen()
        base_seconds = self.counters["seconds"]
        try:
            while self.step < tc.steps:
                self.train_step()
                self.counters["seconds"] = base_seconds + time.perf_counter() - started
                last = self.step == tc.steps
                if self.step % tc.log_every == 0 or last:
                    now, samples = time.perf_counter(), self.samples_seen()
                    self.log(samples_per_s=(samples - last_log_samples) / max(now - last_log_time, 1e-9))
                    last_log_time, last_log_samples = now, samples
                if tc.eval_every and self.step % tc.eval_every == 0 and not last:
                    self.evaluate()
                if tc.checkpoint_every and self.step % tc.checkpoint_every == 0 and not last:
                    self.save_checkpoint()
                if any_rank(self.stop_signal is not None, self.dist):  # ranks may get the signal steps apart
                    raise Interrupted(self.step, self.save_checkpoint())
            metrics = self.evaluate()
            self.save_checkpoint()
            return metrics
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def train_step(self) -> None:
        """One iteration: each player's updates in turn, then every learning-rate schedule."""
        for player in self.players:
            for _ in range(self.repeats[player]):
                self.accumulate(self.update(player))
        self.step += 1
        for scheduler in self.schedulers.values():
            scheduler.step()

    def can_trap_signals(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def request_stop(self, signum: int, _frame: Any) -> None:
        """First SIGINT/SIGTERM: finish this step, save, stop. A second one stops at once."""
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = signum
        if self.monitor:
            self.monitor.message(f"{signal.Signals(signum).name}: finishing step {self.step + 1}, then saving a checkpoint")

    def samples_seen(self) -> int:
        return self.counters["synthetic_samples"] + self.counters["real_samples"]

    def accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0) + v
            self.counts[k] = self.counts.get(k, 0) + 1

    # ------------------------------------------------------------------------------------------
    # Reporting

    def log(self, samples_per_s: float) -> None:
        keys = sorted(self.sums)
        means = mean_across_ranks(torch.stack([self.sums[k] / self.counts[k] for k in keys]), self.dist).tolist() if keys else []
        values = dict(zip(keys, means))
        self.sums, self.counts = {}, {}
        for player, optimizer in self.optimizers.items():
            values[f"lr/{player}"] = optimizer.param_groups[0]["lr"]
        values["throughput/samples_per_s"] = samples_per_s * self.dist.world_size
        values["budget/student_steps"] = self.counters["student_steps"]
        values["budget/synthetic_samples"] = self.counters["synthetic_samples"] * self.dist.world_size
        values["budget/seconds"] = self.counters["seconds"]
        if self.generator is not None:
            values.update(self.synthetic_diagnostics())
        self.monitor.scalars(self.step, values)
        figures = {"loss": f"{values.get('loss/student/total', float('nan')):.4f}"}
        if self.last_eval:
            figures["acc"] = f"{self.last_eval['student_accuracy']:.2f}%"
        self.monitor.progress(self.step, figures)

    @torch.no_grad()
    def synthetic_diagnostics(self) -> dict[str, float]:
        """Class balance, diversity and agreement on one fresh synthetic batch (eval-mode student),
        histograms of the teacher's answers and, every image_every steps, a sample grid."""
        # Drawn aside from the training RNG stream, with the generator's BatchNorm statistics put
        # back afterwards, so that how often a run logs does not change what it trains.
        buffers = [b.clone() for b in self.generator.buffers()]
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            x, _ = self.generator.sample(self.cfg.trainer.batch_size)
        for b, saved in zip(self.generator.buffers(), buffers):
            b.copy_(saved)
        t_logits = self.teacher(x)
        with eval_mode(self.student):
            s_logits = self.student(x)
        balance, spread = diagnostics.class_balance(t_logits), diagnostics.diversity(x)
        counts = torch.bincount(t_logits.argmax(1), minlength=self.info.num_classes)
        message = None
        if self.step > self.cfg.trainer.steps // 10:  # a fresh generator is collapsed by construction: let it warm up
            message = self.collapse.check(self.step, balance, spread, int(counts.argmax()), float(counts.max() / counts.sum()))
        if message:
            self.monitor.message(message)
            self.monitor.text(self.step, "synthetic/collapse", message)
        self.monitor.histogram(self.step, "synthetic/teacher_class", t_logits.argmax(1),
                               bins=np.arange(self.info.num_classes + 1) - 0.5)
        self.monitor.histogram(self.step, "synthetic/teacher_max_prob", F.softmax(t_logits.float(), 1).max(1).values)
        self.monitor.histogram(self.step, "synthetic/student_max_prob", F.softmax(s_logits.float(), 1).max(1).values)
        every = self.cfg.trainer.image_every
        if self.info.is_image and every and (self.step % every == 0 or self.step == self.cfg.trainer.steps):
            self.monitor.image(self.step, "synthetic/samples", sample_grid(self.info.denormalize(x[:64])))
        return {"synthetic/class_balance": balance, "synthetic/diversity": spread,
                "synthetic/agreement": diagnostics.agreement(s_logits, t_logits)}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Student accuracy, teacher accuracy and their agreement on the real test set."""
        self.sync_buffers()  # every rank evaluates its shard with the same student
        test, info, bs = self.dataset.test, self.info, self.cfg.data.test_batch_size
        batches = lambda: eval_batches(test, info, bs, self.device, self.dist.rank, self.dist.world_size)  # noqa: E731
        if self.teacher is not None and self.teacher_test_predictions is None:  # the teacher is frozen: once
            self.teacher_test_predictions = torch.cat([self.teacher(x).argmax(1) for x, _ in batches()])
        correct = agree = teacher_correct = total = 0
        with eval_mode(self.student):
            for x, y in batches():
                s_pred = self.student(x.contiguous(memory_format=self.memory_format)).argmax(1)
                correct += int((s_pred == y).sum())
                if self.teacher is not None:
                    t_pred = self.teacher_test_predictions[total: total + len(y)]
                    agree += int((s_pred == t_pred).sum())
                    teacher_correct += int((t_pred == y).sum())
                total += len(y)
        counts = sum_across_ranks(torch.tensor([correct, agree, teacher_correct, total], dtype=torch.float64), self.dist).tolist()
        correct, agree, teacher_correct, total = counts
        metrics = {"student_accuracy": 100 * correct / total}
        if self.teacher is not None:
            metrics.update(teacher_accuracy=100 * teacher_correct / total, agreement=100 * agree / total)
        self.last_eval = metrics
        if self.monitor:
            self.monitor.scalars(self.step, {f"accuracy/{k.removesuffix('_accuracy')}": v for k, v in metrics.items()})
            figures = "  ".join(f"{k.replace('_', ' ')} {v:.2f}%" for k, v in metrics.items())
            self.monitor.message(f"step {self.step}/{self.cfg.trainer.steps}  {figures}")
        return metrics

    def summary(self) -> dict[str, float]:
        """Final figures: accuracies and the budget spent (time, student steps, samples)."""
        return {
            **self.last_eval,
            "student_steps": self.counters["student_steps"],
            "synthetic_samples": self.counters["synthetic_samples"] * self.dist.world_size,
            "real_samples": self.counters["real_samples"] * self.dist.world_size,
            "seconds": round(self.counters["seconds"], 2),
            "student_parameters": count_parameters(self.student),
            "teacher_parameters": count_parameters(self.teacher) if self.teacher is not None else 0,
        }

    # ------------------------------------------------------------------------------------------
    # Checkpoints: exact resume

    def state_dict(self) -> dict[str, Any]:
        nets = {"student": self.student, "generator": self.generator, "discriminator": self.discriminator}
        rng = {"torch": torch.get_rng_state(), "numpy": numpy_rng_state(), "python": random.getstate(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {
            "step": self.step,
            "config": self.cfg.to_dict(),
            "notes": self.notes,
            "counters": dict(self.counters),
            "models": {k: v.state_dict() for k, v in nets.items() if v is not None},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scalers": {k: v.state_dict() for k, v in self.scalers.items()},
            "rng": gather_objects(rng, self.dist),  # one entry per rank
            "data_position": self.stream.position if self.stream is not None else 0,
            "replay": gather_objects(self.pool.state_dict(), self.dist) if self.pool is not None else None,  # per rank
            "collapsed": self.collapse.collapsed,
            "last_eval": dict(self.last_eval),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["rng"]) != self.dist.world_size:
            raise ConfigError(f"this run was saved by {len(state['rng'])} process(es) and cannot continue exactly on "
                              f"{self.dist.world_size}; resume it with torchrun --nproc_per_node {len(state['rng'])}")
        self.step = state["step"]
        self.counters.update(state["counters"])
        nets = {"student": self.student, "generator": self.generator, "discriminator": self.discriminator}
        for name, sd in state["models"].items():
            nets[name].load_state_dict(sd)
        for group in ("optimizers", "schedulers", "scalers"):
            for name, sd in state[group].items():
                getattr(self, group)[name].load_state_dict(sd)
        rng = state["rng"][self.dist.rank]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)
        set_numpy_rng_state(rng["numpy"])
        random.setstate(rng["python"])
        if self.stream is not None:
            self.stream.position = state["data_position"]
        if state["replay"] is not None and self.pool is not None:
            self.pool.load_state_dict(state["replay"][self.dist.rank], self.device)
        self.collapse.collapsed = state["collapsed"]
        self.last_eval = dict(state["last_eval"])

    def sync_buffers(self) -> None:
        broadcast_buffers([m for m in (self.student, self.generator, self.discriminator) if m is not None], self.dist)

    def last_good_checkpoint(self) -> str:
        found = checkpoint.list_run_checkpoints(self.run_dir) if self.run_dir is not None else []
        return f"its last good checkpoint is {found[-1]}" if found else "no checkpoint had been saved yet"

    def check_finite_weights(self) -> None:
        """A finite loss can still step into NaN weights (an Inf gradient); never save those."""
        for player, net in (("student", self.student), ("generator", self.generator), ("discriminator", self.discriminator)):
            for name, value in net.state_dict().items() if net is not None else ():
                if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                    raise DivergenceError(f"step {self.step}: the {player}'s {name} holds NaN/Inf values; the run stopped "
                                          f"without saving them; {self.last_good_checkpoint()} (lower the learning rate "
                                          f"or set {player}.optim.grad_clip)")

    def save_checkpoint(self) -> Path | None:
        self.check_finite_weights()
        self.sync_buffers()
        state = self.state_dict()  # every rank takes part (RNG states are gathered)
        if self.run_dir is None or not self.dist.is_main:
            return None
        return checkpoint.save_run(state, self.run_dir, self.step, self.cfg.trainer.keep_checkpoints)


def sample_grid(images: torch.Tensor) -> torch.Tensor:
    """A grid of up to 64 images, enlarged to at least 32 px so that 8×8 digits are visible."""
    from torchvision.utils import make_grid

    scale = max(1, 32 // images.shape[-1])
    if scale > 1:
        images = F.interpolate(images.float(), scale_factor=scale, mode="nearest")
    return make_grid(images.clamp(0, 1), nrow=8, padding=2)


def numpy_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_numpy_rng_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["kind"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))
