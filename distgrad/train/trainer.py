"""The trainer: microbatched data-parallel training from a config.

Every rank runs the same loop. A step takes one global batch: this rank's
``accum_steps`` microbatches (DistributedSampler order), each backward inside
``no_sync()`` but the last, so the all-reduce runs once per step, overlapped with
the last backward. Then the gradient norm (clipped where configured), one small
all-gather of every rank's loss and norm, the non-finite check, the optimizer and
the schedule. Rank 0 shows progress; every rank writes its metrics and console
output into the run directory; checkpoints are written by rank 0 and verified
before a resume uses them.

A debug run (world size 1) reaches the same global batch by accumulating more
microbatches: step k uses exactly the samples the N-rank run uses at step k, so
the loss curves agree (to float rounding; exactly when dropout is off and the
ranks' summation order does not matter).

Every collective waits within ``dist.timeout_s`` (``distributed.monitor``), and
the monitor knows the phase each rank is in, for the stall report and for every
failure message.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass

import numpy as np

from .. import amp, cuda, nn, optim, profiler
from .. import distributed as dist
from .. import random as _random
from ..autograd.grad_mode import no_grad
from ..data.dataloader import default_collate
from ..data.sampler import DistributedSampler
from ..distributed import failure, monitor
from ..distributed.group import default_comm, run_with_timeout, wait_for
from ..distributed.optim import zero
from ..dtype import set_default_dtype, to_dtype
from ..random import default_generator, manual_seed
from . import checkpoint as ckpt
from . import records, tracing
from .config import config_hash, resume_refusal
from .datasets import build_datasets
from .losses import Objective
from .models import build_model


class NonFiniteStop(RuntimeError):
    """Training stopped on a non-finite loss, gradient norm or parameter. Every rank
    raises it at the same step (they decide on the same gathered values)."""


class ResumeRefused(RuntimeError):
    """The run directory cannot be resumed with this config."""


def lr_lambda(cfg: dict, total: int):
    """The schedule as a factor of the peak learning rate, step by step."""
    s = cfg["schedule"]
    lr, warm = cfg["optim"]["lr"], s["warmup_steps"]
    floor = s["min_lr"] / lr if lr else 0.0

    def factor(step: int) -> float:
        if step < warm:
            return 0.01 + 0.99 * step / warm
        t = (step - warm) / max(1, total - warm)
        if s["name"] == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if s["name"] == "linear":
            return 1 - (1 - floor) * min(t, 1.0)
        if s["name"] == "step":
            return s["gamma"] ** ((step - warm) // s["step_size"])
        return 1.0

    return factor


def build_optimizer(cfg: dict, model: nn.Module, sharded: bool = False):
    """The configured optimizer over two groups (weight decay on matrices only);
    ``sharded``: a ZeroRedundancyOptimizer holding the state of this rank's shard."""
    o = cfg["optim"]
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if o["name"] == "sgd":
        cls, kw = optim.SGD, {"lr": o["lr"], "momentum": o["momentum"], "nesterov": o["nesterov"]}
    else:
        cls = optim.AdamW if o["name"] == "adamw" else optim.Adam
        kw = {"lr": o["lr"], "betas": tuple(o["betas"]), "eps": o["eps"]}
    return zero.ZeroRedundancyOptimizer(groups, cls, **kw) if sharded else cls(groups, **kw)


class _Progress:
    """A tqdm bar on rank 0 when the user's terminal shows it: this process's stdout,
    or the launcher's (``DISTGRAD_TTY=1``: a rank's stdout is a pipe to mpiexec).
    The bar goes to the terminal only; log lines also go to the rank's log."""

    def __init__(self, enabled: bool, total: int, start: int, terminal):
        self.bar = None
        shown = terminal.isatty() or os.environ.get("DISTGRAD_TTY") == "1"
        if enabled and shown:
            from tqdm import tqdm

            cols = os.environ.get("DISTGRAD_COLUMNS")
            self.bar = tqdm(total=total, initial=start, unit="step", mininterval=0.5, file=terminal,
                            ncols=int(cols) if cols and cols.isdigit() else None,
                            dynamic_ncols=not cols)

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def write(self, text: str):
        if self.bar is None:
            print(text, flush=True)
            return
        with self.bar.external_write_mode():
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class Position:
    """Where training stands: optimizer steps done, the epoch and the step within it,
    and the training time so far (seconds, across resumes)."""
    step: int = 0
    epoch: int = 0
    batch: int = 0
    elapsed: float = 0.0


class Trainer:
    def __init__(self, cfg: dict, run_dir: str, resume: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir
        self.resume = resume
        self.rank, self.world = 0, 1
        self.console = None

    # ----------------------------------------------------------------- setup
    def _join(self):
        """Join the job, and from then on keep this rank's console output and record
        any failure in the run directory."""
        d = self.cfg["dist"]
        if not dist.is_initialized():
            dist.init_process_group(d["backend"], timeout=d["timeout_s"], stall_report=d["stall_report_s"])
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        monitor.at("startup", 0, "building the model and data")
        if os.environ.get("DISTGRAD_NO_RANK_LOG") != "1":
            self.console = records.ConsoleLog(self.run_dir, self.rank)
        failure.on_fatal(self._record_fatal)

    def _setup(self):
        cfg = self.cfg
        d = cfg["dist"]
        if self.world != d["np"]:
            raise RuntimeError(
                f"this job has {self.world} ranks but its config was resolved for dist.np = {d['np']}; "
                f"start it with distgrad-launch (or mpiexec -n {d['np']}) so the batch arithmetic holds")
        t = cfg["train"]
        per_rank = t["global_batch"] // self.world
        if per_rank % t["micro_batch"] or t["global_batch"] % self.world:
            raise RuntimeError(
                f"train.global_batch = {t['global_batch']} cannot be split into microbatches of "
                f"{t['micro_batch']} on {self.world} ranks (the launcher checks this; was the config "
                "resolved for another world size?)")
        self.accum = per_rank // t["micro_batch"]
        self.device = "cpu"
        if cfg["run"]["device"] == "cuda":
            # Each rank takes its own GPU on its node (they wrap around if there are fewer).
            local = dist.get_local_rank() % max(1, cuda.device_count())
            cuda.set_device(local)
            self.device = f"cuda:{local}"
        set_default_dtype(to_dtype(cfg["run"]["dtype"]))
        manual_seed(cfg["run"]["seed"])
        self.objective = Objective(t["loss"])
        self.train_set, self.val_set, self.info = build_datasets(cfg)
        self.sampler = DistributedSampler(self.train_set, self.world, self.rank, shuffle=True,
                                          seed=cfg["run"]["seed"], drop_last=True)
        self.steps_per_epoch = len(self.sampler) // per_rank
        if self.steps_per_epoch == 0:
            raise RuntimeError(
                f"the training set ({len(self.train_set)} samples) is smaller than one global batch "
                f"({t['global_batch']}); lower train.global_batch")
        self.total_steps = t["steps"] if t["steps"] is not None else t["epochs"] * self.steps_per_epoch
        self.model = build_model(cfg, self.info).to(self.device)
        self.ddp = None
        if self.world > 1:
            # Gradients as views of the buckets: the trainer clears .grad every step, so
            # nothing keeps an old gradient that the next step would overwrite.
            self.ddp = dist.DistributedDataParallel(
                self.model, bucket_cap_mb=d["bucket_cap_mb"], first_bucket_cap_mb=min(1.0, d["bucket_cap_mb"]),
                find_unused_parameters=d["find_unused_parameters"],
                gradient_as_bucket_view=True)
        # ZeRO: in a world of one there is nothing to shard.
        self.zero_stage = d["zero_stage"] if self.world > 1 else 0
        if self.zero_stage == 2 and cfg["run"]["precision"] in ("fp16-mixed", "16-mixed"):
            raise RuntimeError(
                f"rank {self.rank}: dist.zero_stage = 2 cannot be combined with run.precision = "
                f"{cfg['run']['precision']!r}: each rank would check only its shard of the gradients for "
                "float16 overflow, and the ranks could disagree on skipping a step. Use dist.zero_stage = 1 "
                "or run.precision = 'bf16-mixed'")
        self.optimizer = build_optimizer(cfg, self.model, sharded=self.zero_stage >= 1)
        if self.zero_stage == 2:
            zero.shard_gradients(self.ddp, self.optimizer)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg, self.total_steps))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.hash = config_hash(cfg)
        self.hosts = self._agree_on_the_run()
        self.skipped = self.consecutive_skips = 0
        # Mixed precision: float32 weights; forward (and evaluation) under autocast; for
        # float16 a dynamic loss scale (bfloat16 has float32's range and needs none).
        low = {"bf16-mixed": "bfloat16", "fp16-mixed": "float16", "16-mixed": "float16"}.get(cfg["run"]["precision"])
        self.autocast_dtype = None if low is None else amp.autocast_mode._resolve(low)
        self.device_type = "cuda" if self.device.startswith("cuda") else "cpu"
        self.scaler = amp.GradScaler(self.device_type, enabled=low == "float16")

    def _agree_on_the_run(self) -> list:
        """Every rank's host name, after checking that all ranks will run the same
        steps on data of the same size (a rank that runs one step more would wait
        for the others forever)."""
        mine = {"steps": self.total_steps, "steps per epoch": self.steps_per_epoch,
                "training samples": len(self.train_set), "validation samples": len(self.val_set)}
        if self.world == 1:
            return [monitor.HOST]
        everyone = run_with_timeout(lambda: default_comm().allgather_object((monitor.HOST, mine)),
                                    "the start-up check that every rank runs the same steps")
        hosts = [h for h, _ in everyone]
        for r, (host, theirs) in enumerate(everyone):
            for key, value in theirs.items():
                if value != everyone[0][1][key]:
                    raise RuntimeError(
                        f"rank {r} ({host}) and rank 0 ({hosts[0]}) disagree on the run: {key} "
                        f"{value} on rank {r}, {everyone[0][1][key]} on rank 0. Every rank must see "
                        "the same data (the same dataset function and files on every host)")
        return hosts

    def _loss(self, x, y):
        x, y = x.to(self.device), y.to(self.device)
        model = self.ddp if self.ddp is not None and self.model.training else self.model
        with amp.autocast(self.device_type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            return self.objective(model(x), y)

    def _rank_name(self, r: int) -> str:
        return f"rank {r} ({self.hosts[r]})"

    # ------------------------------------------------------------------ data
    def _schedule(self, pos: Position):
        """(step, this rank's microbatches, position after the step) for every step
        from ``pos`` to the end."""
        epoch, batch, step = pos.epoch, pos.batch, pos.step
        mb = self.cfg["train"]["micro_batch"]
        fetch = getattr(self.train_set, "__getitems__", None)
        while step < self.total_steps:
            self.sampler.set_epoch(epoch)
            idx = list(self.sampler)
            for s in range(batch, self.steps_per_epoch):
                monitor.at("data", step + 1, "loading the step's microbatches")
                micro = []
                for a in range(self.accum):
                    lo = (s * self.accum + a) * mb
                    ids = idx[lo:lo + mb]
                    micro.append(default_collate(fetch(ids) if fetch else [self.train_set[i] for i in ids]))
                step += 1
                after = (epoch + 1, 0) if s + 1 == self.steps_per_epoch else (epoch, s + 1)
                yield step, micro, after
                if step == self.total_steps:
                    return
            epoch, batch = epoch + 1, 0

    # ------------------------------------------------------------------ step
    def _train_step(self, step: int, micro) -> dict:
        self.optimizer.zero_grad()
        n = len(micro)
        losses = []
        for i, (x, y) in enumerate(micro):
            sync = self.ddp is None or i == n - 1
            detail = f"microbatch {i + 1} of {n}"
            with (self.ddp.no_sync() if not sync else contextlib.nullcontext()):
                monitor.at("forward", step, detail)
                with profiler.span("forward", "train", microbatch=i + 1):
                    loss, _, _ = self._loss(x, y)
                monitor.at("backward", step, detail)
                with profiler.span("backward", "train", microbatch=i + 1, synchronized=sync):
                    self.scaler.scale(loss / n).backward()
            losses.append(loss.detach())
        monitor.at("optimizer", step, "")
        with profiler.span("optimizer", "train"):
            return self._update(step, n, losses)

    def _update(self, step: int, n: int, losses: list) -> dict:
        """Clip, agree on the loss and the norm, and take (or skip) the step."""
        if self.scaler.is_enabled():
            self.scaler.unscale_(self.optimizer)   # the true gradients, for the norm and clipping
        if self.zero_stage == 2:   # each rank holds only its shard's gradients
            norm = zero.global_grad_norm(self.params)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        clip = self.cfg["optim"]["grad_clip"]
        if clip:
            nn.utils.clip_grads_with_norm_(self.params, clip, norm)
        # Read once the step's work is queued (on a GPU, reading waits for it).
        local = sum(v.item() for v in losses) / n
        # This rank's overlap of communication with backward in this step (NaN: none measured).
        ov = self.ddp.reducer.last_overlap if self.ddp is not None else None
        if self.ddp is not None:
            self.ddp.reducer.last_overlap = None
        figures = [math.nan] * 3 if ov is None else [ov["hidden_share"], ov["wait_s"], ov["comm_s"]]
        every = self._gather(step, [local, float(norm.item())] + figures)
        row = {"step": step, "loss": float(every[:, 0].mean()), "local_loss": local,
               "grad_norm": float(every[self.rank, 1]), "lr": self.scheduler.get_last_lr()[0]}
        if ov is not None:
            row.update(comm_hidden_share=ov["hidden_share"], comm_wait_ms=ov["wait_s"] * 1e3,
                       comm_ms=ov["comm_s"] * 1e3)
            self.overlap = ov
        self._add_overlap(step, every[:, 2:5])
        every = every[:, :2]
        problem = self._nonfinite(step, every)
        if self.scaler.is_enabled() and (problem is None or np.isfinite(every[:, 0]).all()):
            # float16: overflowing gradients are the loss scale's business: the scaler
            # skips the update and lowers the scale (the same on every rank, as the
            # gradients are averaged before it looks)
            before = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            row["loss_scale"] = before
            if problem is None:
                self.consecutive_skips = 0
            else:
                self.optimizer.zero_grad()
                self.skipped += 1
                row.update(skipped=True, reason=f"{problem}: float16 gradient overflow; the loss scale goes "
                                                f"from {before:g} to {self.scaler.get_scale():g}")
        elif problem is None:
            self.optimizer.step()
            self.consecutive_skips = 0
        else:
            if self.scaler.is_enabled():
                self.scaler.update()
            self._skip(step, problem, row)
        self.scheduler.step()
        return row

    def _gather(self, step: int, values: list) -> np.ndarray:
        """Every rank's ``values`` as rows of one array (one small collective, which
        also checks that every rank is at the same step)."""
        mine = np.asarray([step] + values, dtype=np.float64)
        if self.world == 1:
            return mine[None, 1:]
        parts = wait_for(default_comm().iallgather(mine), f"the loss all-gather of step {step}")
        every = np.stack([np.asarray(p) for p in parts])
        if (every[:, 0] != step).any():
            steps = ", ".join(f"{self._rank_name(r)} at step {int(v)}" for r, v in enumerate(every[:, 0]))
            raise RuntimeError(f"the ranks are out of step ({steps}): they must run the same steps")
        return every[:, 1:]

    def _add_overlap(self, step: int, figures: np.ndarray) -> None:
        """Sum every rank's overlap figures (hidden share, wait, communication time) of
        the steps after this process's first (which also builds the buckets)."""
        if step == self.start.step + 1 or not np.isfinite(figures).all():
            return
        self.overlap_sums = figures if self.overlap_sums is None else self.overlap_sums + figures
        self.overlap_steps += 1

    def overlap_summary(self) -> dict | None:
        """Per rank, the mean over the measured steps of the share of communication
        hidden behind backward, the time backward's end waited for the buckets, and the
        communication time."""
        if self.overlap_sums is None:
            return None
        mean = self.overlap_sums / self.overlap_steps
        return {"steps": self.overlap_steps,
                "hidden_share": [round(float(v), 4) for v in mean[:, 0]],
                "wait_ms": [round(float(v) * 1e3, 3) for v in mean[:, 1]],
                "comm_ms": [round(float(v) * 1e3, 3) for v in mean[:, 2]]}

    def _nonfinite(self, step: int, every: np.ndarray) -> str | None:
        """What was non-finite at ``step`` (the same text on every rank), or None."""
        bad = [r for r in range(self.world) if not math.isfinite(every[r, 0])]
        norms = every[:, 1]
        if not bad and np.isfinite(norms).all():
            return None
        parts = []
        if bad:
            parts.append("the loss is " + ", ".join(f"{every[r, 0]} on {self._rank_name(r)}" for r in bad))
        if not np.isfinite(norms).all():
            r = int(np.flatnonzero(~np.isfinite(norms))[0])
            where = "" if self.world == 1 else " (after averaging over the ranks)"
            parts.append(f"the gradient norm{where} is {norms[r]}"
                         + ("" if bad else ", although the loss was finite on every rank"))
        return f"step {step}: " + "; ".join(parts)

    def _skip(self, step: int, problem: str, row: dict) -> None:
        t = self.cfg["train"]
        if t["on_nonfinite"] == "stop":
            self.metrics.write(dict(row, stopped=True, reason=problem, timestamp=time.time()))
            raise NonFiniteStop(
                f"non-finite values at {problem}. The parameters were not updated and no "
                f"checkpoint was written after step {step - 1}. Lower optim.lr, set optim.grad_clip, "
                "check the data, or set train.on_nonfinite = 'skip_step' to skip such steps")
        self.optimizer.zero_grad()
        self.skipped += 1
        self.consecutive_skips += 1
        row.update(skipped=True, reason=problem)
        if self.consecutive_skips >= t["max_skipped_steps"]:
            raise NonFiniteStop(
                f"{self.consecutive_skips} steps in a row were skipped for non-finite values (the "
                f"last at {problem}); train.max_skipped_steps = {t['max_skipped_steps']}. The model "
                "is not recovering: lower optim.lr, set optim.grad_clip, or check the data")
        if self.rank == 0:
            self.progress.write(f"step {step:6d}  skipped: non-finite values at {problem}; "
                                "the parameters were not updated")

    # ------------------------------------------------------------ evaluation
    def _evaluate(self, step: int) -> dict | None:
        """Loss (and accuracy, where it means something) on the first ``eval_batches``
        global batches of the validation set (the same samples whatever the world size)."""
        t = self.cfg["train"]
        total = min(len(self.val_set), t["eval_batches"] * t["global_batch"])
        idx = list(range(self.rank, total - total % self.world, self.world))
        mb = t["micro_batch"]
        fetch = getattr(self.val_set, "__getitems__", None)
        sums = np.zeros(3)  # loss x count, correct, count
        batches = range(0, len(idx), mb)
        self.model.eval()
        try:
            with no_grad():
                for k, lo in enumerate(batches):
                    monitor.at("eval", step, f"batch {k + 1} of {len(batches)}")
                    ids = idx[lo:lo + mb]
                    x, y = default_collate(fetch(ids) if fetch else [self.val_set[i] for i in ids])
                    loss, count, correct = self._loss(x, y)
                    sums += (loss.item() * count, 0.0 if correct is None else correct.item(), count)
        finally:
            self.model.train()
        if self.world > 1:
            wait_for(default_comm().iallreduce_(sums), f"the evaluation all-reduce of step {step}")
        if sums[2] == 0:
            return None
        result = {"eval_loss": sums[0] / sums[2]}
        if self.objective.has_accuracy:
            result["eval_accuracy"] = sums[1] / sums[2]
        return result

    def _log_eval(self, step: int):
        with profiler.span("evaluation", "train"):
            result = self._evaluate(step)
        if result is not None:
            gb = self.cfg["train"]["global_batch"]
            self.metrics.write(dict(result, step=step, samples=step * gb,
                                    tokens=step * gb * (self.info.get("tokens_per_sample") or 0),
                                    time=self._elapsed(), timestamp=time.time()))
            if self.rank == 0:
                acc = f"  eval accuracy {result['eval_accuracy']:.2%}" if "eval_accuracy" in result else ""
                self.progress.write(f"step {step:6d}  eval loss {result['eval_loss']:.4f}{acc}")
        return result

    # ----------------------------------------------------------- checkpoints
    def _save(self, step: int, after: tuple) -> None:
        monitor.at("save", step, "")
        with profiler.span("checkpoint save", "train"):
            self._save_checkpoint(step, after)

    def _save_checkpoint(self, step: int, after: tuple) -> None:
        bad = [n for n, p in self.model.named_parameters() if not bool(p.detach().isfinite().all().item())]
        if bad:  # the same on every rank: DDP keeps the parameters identical
            shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
            raise NonFiniteStop(
                f"the parameters hold NaN or Inf after the update of step {step} ({shown}); the "
                f"checkpoint of step {step} was not written. Lower optim.lr or set optim.grad_clip")
        if self.zero_stage:   # the checkpoint holds the full optimizer state, gathered on rank 0
            self.optimizer.consolidate_state_dict(to=0)
        if self.rank == 0:
            meta = {"config_hash": self.hash, "config": self.cfg, "epoch": after[0], "batch": after[1],
                    "rng": default_generator._rng.bit_generator.state,
                    "rng_seed": default_generator.initial_seed(), "world_size": self.world,
                    "elapsed_s": self._elapsed(), "total_steps": self.total_steps,
                    "steps_per_epoch": self.steps_per_epoch, "skipped_steps": self.skipped,
                    "rng_devices": {str(i): s.numpy().tolist() for i, s in _random.device_states().items()}}
            if self.scaler.is_enabled():
                meta["scaler"] = self.scaler.state_dict()
            ckpt.save(self.run_dir, step, self.model, self.optimizer, self.scheduler, meta,
                      self.cfg["train"]["keep_checkpoints"])
        if self.world > 1:
            wait_for(default_comm().ibarrier(), f"the barrier after the checkpoint of step {step}")

    def _choose_checkpoint(self) -> int:
        """The newest checkpoint that verifies (rank 0 looks, everyone follows); damaged
        newer ones are reported and set aside as ``*.damaged``."""
        monitor.at("resume", 0, "verifying checkpoints")
        found = ckpt.find_resumable(self.run_dir) if self.rank == 0 else None
        if self.world > 1:
            found = run_with_timeout(lambda: default_comm().broadcast_object(found, 0),
                                     "the choice of the checkpoint to resume from")
        step, damaged = found
        if self.rank == 0:
            for bad_step, reason in damaged:
                self._set_aside(bad_step)
                print(f"distgrad: --resume: the checkpoint of step {bad_step} is not usable: {reason}; "
                      f"its files were renamed *.damaged", file=sys.stderr, flush=True)
            if damaged and step is not None:
                print(f"distgrad: --resume: falling back to the checkpoint of step {step}, which "
                      "verifies", file=sys.stderr, flush=True)
        if step is None:
            why = "; ".join(f"step {s}: {r}" for s, r in damaged) or "there are no checkpoint files"
            raise ResumeRefused(f"--resume: no usable checkpoint in {self.run_dir} ({why})")
        return step

    def _stretch_schedule(self, before: int) -> None:
        """A resume that changes the run's length: the schedule is this config's from
        now on, including the learning rate of the next step."""
        old = self.scheduler.get_last_lr()[0]
        self.scheduler.step(self.scheduler.last_epoch)  # the same step, the new schedule
        if self.rank == 0:
            print(f"distgrad: --resume: the run now has {self.total_steps} steps instead of {before}; the "
                  f"{self.cfg['schedule']['name']} schedule follows the new length, so the learning rate "
                  f"of the next step is {self.scheduler.get_last_lr()[0]:.4g} (it was {old:.4g})",
                  file=sys.stderr, flush=True)

    def _set_aside(self, step: int) -> None:
        for path in ckpt.paths(self.run_dir, step):
            if os.path.exists(path):
                os.replace(path, path + ".damaged")

    def _restore(self, step: int) -> Position:
        with open(ckpt.paths(self.run_dir, step)[1]) as f:
            meta = json.load(f)
        refusal = resume_refusal(meta.get("config"), meta.get("config_hash"), self.cfg)
        if refusal:
            raise ResumeRefused(
                f"--resume: the checkpoint of step {step} in {self.run_dir}: {refusal}. Resume "
                "with the run's own config.toml, or start a new run")
        meta = ckpt.load(self.run_dir, step, self.model, self.optimizer, self.scheduler)
        if meta.get("total_steps", self.total_steps) != self.total_steps:
            self._stretch_schedule(meta["total_steps"])
        default_generator._seed = meta["rng_seed"]
        default_generator._rng.bit_generator.state = meta["rng"]
        for i, state in meta.get("rng_devices", {}).items():
            _random.device_generator(int(i)).set_state(np.asarray(state, dtype=np.uint8))
        if self.scaler.is_enabled() and "scaler" in meta:
            self.scaler.load_state_dict(meta["scaler"])
        self.skipped = meta.get("skipped_steps", 0)
        return Position(step, meta["epoch"], meta["batch"], meta.get("elapsed_s", 0.0))

    # ------------------------------------------------------------------ loop
    def _elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def run(self) -> dict:
        self._join()
        try:
            self._setup()
            pos = Position()
            if self.resume:
                step = self._choose_checkpoint()
                if step >= self.total_steps:
                    return self._already_finished(step)
                pos = self._restore(step)
        except (KeyboardInterrupt, ResumeRefused):
            self._close_console(keep=False)
            raise
        # (any other error: the failure hook prints it into the log and records it)
        self._open_records(pos)
        try:
            self._loop(pos)
        except NonFiniteStop as e:
            if self.rank == 0:
                print(f"distgrad: stopping: {e}", file=sys.stderr, flush=True)
            self._close_records("failed", error=f"NonFiniteStop: {e}", agreed=True)
            raise
        except BaseException as e:
            interrupted = isinstance(e, KeyboardInterrupt) or type(e).__name__ == "BdbQuit"
            self._close_records("interrupted" if interrupted else "failed",
                                error=None if interrupted else f"{type(e).__name__}: {e}",
                                close_console=interrupted)
            raise
        return self._close_records("completed")

    def _open_records(self, pos: Position) -> None:
        t = self.cfg["train"]
        os.makedirs(self.run_dir, exist_ok=True)
        if self.resume:
            # Rows of steps after the checkpoint are logged again by this run.
            records.truncate_metrics(self.run_dir, pos.step,
                                     None if self.rank == 0 else {self.rank})
        if self.console is not None:
            self.console.keep()
        terminal = self.console.terminal if self.console else sys.stdout
        sinks = []
        if self.rank == 0:
            after = pos.step if self.resume else None
            sinks.append(records.CsvLog(self.run_dir, after))
            if t["tensorboard"]:
                sinks.append(records.TensorBoardLog(self.run_dir, after))
        self.metrics = records.MetricsLog(self.run_dir, self.rank, sinks)
        self.progress = _Progress(self.rank == 0 and t["progress"], self.total_steps, pos.step, terminal)
        self.t0 = time.perf_counter() - pos.elapsed
        self.start, self.last, self.eval_result = pos, {}, None
        self.overlap_sums, self.overlap_steps, self.overlap = None, 0, None
        self.tracer = (tracing.StepTracer(self.run_dir, self.rank, self.world, t["trace_steps"], self.total_steps,
                                          nodes=t["trace_autograd_nodes"])
                       if t["trace_steps"] else None)
        if self.tracer is not None and self.rank == 0:
            beyond = sorted(s for s in t["trace_steps"] if s > self.total_steps)
            if beyond:
                self.progress.write(f"distgrad: train.trace_steps: {', '.join(map(str, beyond))} "
                                    f"beyond the run's {self.total_steps} steps; not traced")
        if self.rank == 0:
            records.begin_run(self.run_dir, run_dir=self.run_dir, world_size=self.world, hosts=self.hosts,
                              total_steps=self.total_steps, resumed_from=pos.step if self.resume else None,
                              started=time.time())
            self.progress.write(
                f"distgrad: {self.world} rank(s), global batch {t['global_batch']} = micro "
                f"{t['micro_batch']} x accum {self.accum} x world {self.world}; "
                f"{sum(p.numel() for p in self.params):,} parameters; {self.total_steps} steps; "
                f"run directory {self.run_dir}" + (f"; resuming at step {pos.step}" if pos.step else ""))
        if os.environ.get("DISTGRAD_MARK_FIRST_STEP") and self.rank == 0:
            print(f"DISTGRAD_FIRST_STEP {time.time():.6f}", flush=True)

    def _record_fatal(self, exc_type, exc, where) -> None:
        if self.console is not None:
            self.console.keep()
        records.record_failure(self.run_dir, self.rank, f"{exc_type.__name__}: {exc}", where=where,
                               failed_step=monitor.state.step, failed_phase=monitor.state.phase)

    def _loop(self, pos: Position) -> None:
        t = self.cfg["train"]
        tokens_per_sample = self.info.get("tokens_per_sample") or 0
        step = pos.step
        batches = self._schedule(pos)
        while True:
            if self.tracer is not None:
                self.tracer.before(step + 1)
            with profiler.span("data", "train"):
                item = next(batches, None)
            if item is None:
                break
            step, micro, after = item
            self.overlap = None
            row = self._train_step(step, micro)
            elapsed = self._elapsed()
            rate = (step - self.start.step) * t["global_batch"] / max(1e-9, elapsed - self.start.elapsed)
            row.update(samples=step * t["global_batch"], tokens=step * t["global_batch"] * tokens_per_sample,
                       samples_per_s=rate, tokens_per_s=rate * tokens_per_sample, time=elapsed,
                       timestamp=time.time())
            self.last = row
            self.metrics.write(row)
            speed = (f"{row['tokens_per_s']:,.0f} tokens/s" if tokens_per_sample else f"{rate:,.0f} samples/s")
            self.progress.update(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}",
                                 **{"tok/s" if tokens_per_sample else "samples/s": speed.split()[0]})
            if self.rank == 0 and (step % t["log_interval"] == 0 or step == self.total_steps):
                self.progress.write(f"step {step:6d}  loss {row['loss']:.4f}  lr {row['lr']:.3e}  "
                                    f"grad norm {row['grad_norm']:.3g}  {speed}")
            if t["eval_interval"] and step % t["eval_interval"] == 0:
                self.eval_result = self._log_eval(step)
            if step == self.total_steps or (t["checkpoint_interval"] and step % t["checkpoint_interval"] == 0):
                self._save(step, after)
            if self.tracer is not None:
                self.tracer.after(step, self.overlap)
        if not t["eval_interval"] or step % t["eval_interval"]:
            self.eval_result = self._log_eval(step)
        monitor.at("done", step, "")

    def _close_records(self, status: str, close_console: bool = True, **fields) -> dict:
        self.progress.close()
        self.metrics.close()
        if self.tracer is not None:
            self.tracer.close()
        step = self.last.get("step", self.start.step)
        summary = dict(self.last, steps=step, world_size=self.world, run_dir=self.run_dir,
                       wall_time_s=self._elapsed(), skipped_steps=self.skipped, **(self.eval_result or {}))
        for key in ("comm_hidden_share", "comm_wait_ms", "comm_ms"):
            summary.pop(key, None)   # one rank's last step: the summary has every rank's means
        overlap = self.overlap_summary()
        if overlap is not None:
            summary["overlap"] = overlap
        if self.tracer is not None and self.tracer.windows:
            summary["trace"] = os.path.join(self.run_dir, tracing.TRACE_FILE)
        if status == "failed" and (self.rank == 0 or not fields.get("agreed")):
            # An error every rank raised together is recorded once; any other by its rank.
            summary.update(failed_step=monitor.state.step, failed_phase=monitor.state.phase)
            records.record_failure(self.run_dir, self.rank, fields["error"], **summary)
        elif self.rank == 0 and status != "failed":
            summary = records.write_summary(self.run_dir, status=status, **summary)
        if self.rank == 0 and status == "completed":
            extra = f"  eval loss {summary['eval_loss']:.4f}" if "eval_loss" in summary else ""
            if "eval_accuracy" in summary:
                extra += f"  eval accuracy {summary['eval_accuracy']:.2%}"
            if overlap is not None:
                shares = ", ".join(f"{v:.0%}" for v in overlap["hidden_share"])
                waits = ", ".join(f"{v:.1f}" for v in overlap["wait_ms"])
                extra += (f"\ncommunication hidden behind backward (rank 0, 1, ...): {shares}; "
                          f"backward's end waited {waits} ms for the buckets")
            if "trace" in summary:
                extra += f"\ntimeline of steps {self._traced_text()}: {summary['trace']}"
            print(f"done: {step} steps in {summary['wall_time_s']:.1f} s  final loss "
                  f"{summary.get('loss', float('nan')):.4f}{extra}\nrun directory: {self.run_dir}", flush=True)
        if status == "interrupted" and self.rank == 0:
            last_ckpt = ckpt.latest(self.run_dir)
            where = (f"the last checkpoint is step {last_ckpt}" if last_ckpt is not None
                     else "no checkpoint was saved")
            print(f"\ndistgrad: interrupted at step {monitor.state.step}; {where} in {self.run_dir}", flush=True)
        if close_console:
            self._close_console(keep=True)
        return summary

    def _traced_text(self) -> str:
        return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in self.tracer.windows)

    def _close_console(self, keep: bool) -> None:
        failure.clear_callbacks()
        if self.console is not None:
            if keep:
                self.console.keep()
            self.console.close()
            self.console = None

    def _already_finished(self, step: int) -> dict:
        """Resuming a run that has done all its steps: say so and change nothing."""
        if self.rank == 0:
            print(f"distgrad: {self.run_dir} has finished: its last checkpoint is of step {step} and "
                  f"this config trains {self.total_steps} steps; nothing to do. To train longer, "
                  "resume with a larger train.steps (or train.epochs)", flush=True)
        self._close_console(keep=False)
        summary = records.read_summary(self.run_dir)
        summary["already_finished"] = True
        return summary
