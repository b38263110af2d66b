"""The one training loop, for every method and all three paths.

Per iteration each player takes its turn with its own optimizer: the generator (g_steps updates),
then the discriminator (d_steps), then the student (s_steps); a method may give a player a turn of
its own instead (a synthesis round, a meta step). An update draws a batch, sums the player's
weighted loss terms, checks them for NaN/Inf and steps that player's optimizer alone; every other
network is frozen for it (requires_grad off). The teacher is frozen and in eval mode throughout.
The student stays in train mode, so its BatchNorm running statistics also follow the generator's
batches, as in DFAD's code (zju-vipa's synthesizers switch it to eval mode for generator updates;
we have not compared the two).

Building the players is `build.py`'s job, saving and restoring them `runstate.py`'s, logging
`reporting.py`'s and testing `evaluation.py`'s: this file is the loop.
"""
from __future__ import annotations

import contextlib
import itertools
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from datafree import runstate
from datafree.augment import build_augmentation
from datafree.batch import Batch, Nets
from datafree.build import assemble
from datafree.config import Config, with_choices
from datafree.data import BatchStream, Dataset
from datafree.distributed import Dist, any_rank, average_gradients, broadcast_parameters
from datafree.errors import DivergenceError, Interrupted
from datafree.evaluation import Evaluator
from datafree.methods.inversion import forget_optimizer_state
from datafree.models import count_parameters
from datafree.monitor import Monitor
from datafree.players import Player
from datafree.precise_bn import PRECISE_BN_SAMPLES, recompute_batchnorm_statistics
from datafree.reporting import Reporter
from datafree.synthetic import ReplayPool, SyntheticSource


class Trainer:
    def __init__(self, cfg: Config, dataset: Dataset, student: nn.Module, teacher: nn.Module | None,
                 run_dir: Path | None, dist: Dist = Dist(), notes: dict[str, Any] | None = None) -> None:
        self.cfg, self.dataset, self.info, self.dist, self.run_dir = cfg, dataset, dataset.info, dist, run_dir
        self.notes = dict(notes or {})  # recorded in checkpoints (e.g. the teacher file's digest)
        self.on_checkpoint: Callable[[Path], None] | None = None  # told of every run checkpoint written
        self.teacher_requires_grad = [p.requires_grad for p in teacher.parameters()] if teacher is not None else []
        built = assemble(cfg, self.info, student, teacher, dist)
        if built.generator is not None and (chosen := built.generator.chosen_args()):
            # in the config the checkpoints and config.toml record: a resume builds this generator again
            self.cfg = cfg = with_choices(cfg, {f"generator.args.{key}": value for key, value in chosen.items()})
        self.method, self.device, self.players = built.method, built.device, built.players
        self.autocast_dtype, self.memory_format = built.autocast_dtype, built.memory_format
        self.teacher, self.student, self.generator, self.discriminator = (built.teacher, built.student,
                                                                          built.generator, built.discriminator)
        self.teacher_probe, self.student_probe, self.gan_loss = built.teacher_probe, built.student_probe, built.gan_loss
        self.discriminator_ddp, self.generator_ddp, self.captures = (built.discriminator_ddp, built.generator_ddp,
                                                                     built.captures)
        # a scaler skips steps until it finds its scale; the scheduler need not warn
        if cfg.trainer.precision == "fp16":
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")

        # --- where batches come from -------------------------------------------------------
        settings = cfg.trainer
        torch.manual_seed(settings.seed + 1_000 * dist.rank)  # every rank draws its own noise
        self.stream, self.synthetic, self.pool = None, None, None
        if self.method.data == "real":
            self.stream = BatchStream(dataset.train, self.info, settings.batch_size, self.device, settings.seed,
                                      augment=cfg.data.augment, rank=dist.rank, world_size=dist.world_size)
        else:
            gc = cfg.generator
            self.pool = ReplayPool(gc.replay_size, gc.replay_mb * 2**20, gc.replay_policy) if gc.replay_size else None
            self.synthetic = SyntheticSource(self.generator, settings.batch_size, self.pool,
                                             1.0 if self.method.fills_pool else gc.replay_fraction,
                                             build_augmentation(gc.augment, self.info.input_shape),
                                             pool_only=self.method.fills_pool)

        # --- progress -----------------------------------------------------------------------
        self.step = 0
        self.counters = {"student_steps": 0, "synthetic_samples": 0, "real_samples": 0, "seconds": 0.0}
        self.last_eval: dict[str, float] = {}
        self.evaluations: list[dict[str, float]] = []  # every evaluation with the budget spent by then
        self.stop_signal: int | None = None
        self.reporter = Reporter(self)
        self.evaluator = Evaluator(self)

    def close(self) -> None:
        """Leave the networks as they were given: no hooks, the teacher's parameters trainable again."""
        for probe in (self.teacher_probe, self.student_probe):
            if probe is not None:
                probe.close()
        if self.teacher is not None:
            for p, flag in zip(self.teacher.parameters(), self.teacher_requires_grad):
                p.requires_grad_(flag)

    def player(self, name: str) -> Player:
        return next(p for p in self.players if p.name == name)

    def modules(self) -> dict[str, nn.Module]:
        """Every trained module of the run by name: the networks, then what players own besides."""
        found = {name: net for name, net in (("student", self.student), ("generator", self.generator),
                                             ("discriminator", self.discriminator)) if net is not None}
        for player in self.players:
            found.update(player.modules)
        return found

    # ------------------------------------------------------------------------------------------
    # One update of one player

    def nets_for(self, player: Player) -> Nets:
        return Nets(self.teacher_probe, self.student_probe,
                    self.discriminator_ddp if player.name == "discriminator" else self.discriminator, self.gan_loss)

    def set_trainable(self, player: Player) -> None:
        own = {id(p) for p in player.params}
        for module in self.modules().values():
            for p in module.parameters():
                p.requires_grad_(id(p) in own)
        for p in player.params:
            p.requires_grad_(True)
        if self.discriminator is not None:  # spectral norm's power iteration runs in its own updates only
            self.discriminator.train(player.name == "discriminator")

    def make_batch(self, player: Player) -> Batch:
        n = self.cfg.trainer.batch_size
        nets, captures, T = self.nets_for(player), self.captures[player.name], self.cfg.method.temperature
        if player.name == "generator":
            x, sampled = self.generator.sample(n, forward=self.generator_ddp)
            self.counters["synthetic_samples"] += n
            x = x.float().contiguous(memory_format=self.memory_format)  # fp32 samples for the image priors
            return Batch(player.name, x, nets, captures, T, sampled_labels=sampled)
        if self.stream is not None:
            x, y = next(self.stream)
            self.counters["real_samples"] += n
            return Batch(player.name, x.contiguous(memory_format=self.memory_format), nets, captures, T, labels=y)
        x, n_fresh = self.synthetic.batch()
        self.counters["synthetic_samples"] += n_fresh
        return Batch(player.name, x.contiguous(memory_format=self.memory_format), nets, captures, T)

    def losses(self, player: Player, batch: Batch,
               weights: dict[str, float] | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The player's weighted loss terms (or `weights` of some of them) on `batch` and their sum,
        stopping the run on NaN/Inf."""
        terms = {name: weight * player.terms[name](batch) for name, weight in (weights or player.weights).items()}
        total = sum(terms.values())
        if any_rank(~torch.isfinite(total.detach()), self.dist):  # a NaN on one rank stops them all
            bad = next((k for k, v in terms.items() if not torch.isfinite(v.detach())), None)
            last_good = runstate.last_good_checkpoint(self.run_dir)
            if bad is None and torch.isfinite(total.detach()):
                raise DivergenceError(f"step {self.step + 1}: a loss of the {player.name} is not finite on another "
                                      f"process; the run stopped; {last_good} (see that process's error)")
            bad = bad or "total"
            raise DivergenceError(
                f"step {self.step + 1}: loss term {bad!r} of the {player.name} is "
                f"{float(terms.get(bad, total).detach()):.4g}; the run stopped; {last_good} "
                f"(lower the learning rate or that term's weight)")
        return total, terms

    def optimize(self, player: Player, total: torch.Tensor) -> None:
        """Backward `total` and step the player's optimizer (gradient clipping, fp16 scaling)."""
        optimizer, scaler = player.optimizer, player.scaler
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        average_gradients(player.shared_params, self.dist)
        if player.optim.grad_clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(player.params, player.optim.grad_clip)
        scaler.step(optimizer)
        scaler.update()

    def update(self, player: Player) -> dict[str, torch.Tensor]:
        self.set_trainable(player)
        with self.autocast(), self.no_sync_except(player):
            batch = self.make_batch(player)  # the generator's forward pass runs in reduced precision too
            total, terms = self.losses(player, batch)
        if player.name == "student":
            self.counters["student_steps"] += 1
            teacher_logits = batch.teacher.logits if "teacher" in batch.__dict__ else None
            self.reporter.observe_student(batch.student.logits, teacher_logits, batch.given_labels)
        self.optimize(player, total)
        out = {f"loss/{player.name}/{k}": v.detach().float() for k, v in terms.items()}
        out[f"loss/{player.name}/total"] = total.detach().float()
        out.update({k: v.detach().float() for k, v in batch.diagnostics.items()})
        return out

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def no_sync_except(self, player: Player):
        """DDP modules of the players not being updated run forward without preparing a
        gradient all-reduce (their parameters get no gradient in this update)."""
        stack = contextlib.ExitStack()
        if self.dist.enabled:
            for other in self.players:
                if other is not player and other.wrapped is not None and hasattr(other.wrapped, "no_sync"):
                    stack.enter_context(other.wrapped.no_sync())
        return stack

    # ------------------------------------------------------------------------------------------
    # The loop

    def fit(self, monitor: Monitor) -> dict[str, float]:
        settings = self.cfg.trainer
        self.reporter.monitor = monitor
        # a signal the process was told to ignore (SIGINT of a job a script started in the background) stays ignored
        previous = ({s: signal.signal(s, self.request_stop) for s in (signal.SIGINT, signal.SIGTERM)
                     if signal.getsignal(s) is not signal.SIG_IGN} if self.can_trap_signals() else {})
        started, last_log_time, last_log_samples = time.perf_counter(), time.perf_counter(), self.samples_seen()
        base_seconds = self.counters["seconds"]
        try:
            while self.step < settings.steps:
                self.train_step()
                last = self.step == settings.steps
                if last and settings.precise_bn and self.stream is not None:  # before any checkpoint at this step
                    self.recompute_batchnorm_statistics()
                self.counters["seconds"] = base_seconds + time.perf_counter() - started
                if self.step % settings.log_every == 0 or last:
                    now, samples = time.perf_counter(), self.samples_seen()
                    self.reporter.log(samples_per_s=(samples - last_log_samples) / max(now - last_log_time, 1e-9))
                    last_log_time, last_log_samples = now, samples
                if settings.eval_every and self.step % settings.eval_every == 0 and not last:
                    self.evaluate()
                if settings.checkpoint_every and self.step % settings.checkpoint_every == 0 and not last:
                    self.save_checkpoint()
                if any_rank(self.stop_signal is not None, self.dist):  # ranks may get the signal steps apart
                    raise Interrupted(self.step, self.save_checkpoint(), self.notes.get("command", "distill"))
            metrics = self.evaluate()
            self.save_checkpoint()
            return metrics
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def train_step(self) -> None:
        """One iteration: each player's turn in order, then every learning-rate schedule."""
        if self.generator is not None and 0 < self.step == self.cfg.generator.made_at(self.step):
            self.restart_generator()
        took_part = []
        for player in self.players:
            if player.turn is not None:
                took_part.append(player.turn(self, player) is not False)
                continue
            for _ in range(player.repeats):
                self.reporter.accumulate(self.update(player))
            took_part.append(True)
        self.step += 1
        for player, moved in zip(self.players, took_part):
            if moved:  # a player that sat out (a method's warm-up) keeps its schedule for later
                player.scheduler.step()

    def restart_generator(self) -> None:
        """A new generator (generator.reset_every), as CMI and NAYER make theirs: one generator can narrow
        onto a few classes for the rest of a run; a new one starts from all of them, while the replay pool
        keeps what the earlier ones made (CMI's initialisation, or the generator's own: NAYER's re-draws its
        noisy layers N(0, 1)). Its optimizer forgets the old moments; its schedule goes on."""
        self.generator.reinitialise()
        broadcast_parameters(self.generator, self.dist)
        forget_optimizer_state(self.player("generator").optimizer, list(self.generator.parameters()))

    def recompute_batchnorm_statistics(self) -> None:
        """The trained model's BatchNorm statistics for its final weights, from training batches
        (datafree/precise_bn.py): a running average lags the weights it was collected under."""
        count = math.ceil(min(PRECISE_BN_SAMPLES, len(self.stream.split)) / self.cfg.trainer.batch_size)
        batches = (x.contiguous(memory_format=self.memory_format) for x, _ in itertools.islice(self.stream, count))
        with self.autocast():
            read = recompute_batchnorm_statistics(self.student, batches)
        if read and self.reporter.monitor:
            self.reporter.monitor.message(f"BatchNorm statistics recomputed for the final weights over {read} "
                                          f"training batches (trainer.precise_bn)")

    def can_trap_signals(self) -> bool:
        return threading.current_thread() is threading.main_thread()

    def request_stop(self, signum: int, _frame: Any) -> None:
        """First SIGINT/SIGTERM: finish this step, save, stop. A second one stops at once."""
        if self.stop_signal is not None:
            raise KeyboardInterrupt
        self.stop_signal = signum
        if self.reporter.monitor:
            self.reporter.monitor.message(f"{signal.Signals(signum).name}: finishing step {self.step + 1}, "
                                          f"then saving a checkpoint")

    def samples_seen(self) -> int:
        return self.counters["synthetic_samples"] + self.counters["real_samples"]

    # ------------------------------------------------------------------------------------------
    # Evaluation, final figures, checkpoints

    def evaluate(self) -> dict[str, float]:
        runstate.sync_buffers(self)  # every rank evaluates its shard with the same student
        self.last_eval = metrics = self.evaluator()
        updates = self.counters["student_steps"]
        self.evaluations.append({"step": self.step, "seconds": round(self.counters["seconds"], 3),
                                 "student_steps": updates, **metrics})
        monitor = self.reporter.monitor
        if monitor:
            percent = {k: v for k, v in metrics.items() if k.endswith(("accuracy", "agreement"))}
            monitor.scalars(self.step, {f"accuracy/{k.removesuffix('_accuracy')}": v for k, v in percent.items()})
            # Methods differ in student updates per step (s_steps): compare them on this axis, not the step's.
            monitor.scalars(updates, {f"accuracy_by_student_updates/{k.removesuffix('_accuracy')}": v
                                      for k, v in percent.items()})
            monitor.scalars(self.step, {f"eval/{k}": v for k, v in metrics.items() if k.endswith("_kl")})
            figures = "  ".join(f"{k.replace('_', ' ')} {v:.2f}%" for k, v in percent.items())
            monitor.message(f"step {self.step}/{self.cfg.trainer.steps}  {figures}")
        if self.evaluator.answer_shares is not None:
            self.reporter.check_test_answers(*self.evaluator.answer_shares)
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

    def state_dict(self) -> dict[str, Any]:
        return runstate.state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        runstate.load_state_dict(self, state)

    def save_checkpoint(self) -> Path | None:
        return runstate.save(self)
