"""The trainer: microbatched data-parallel training from a config.

Every rank runs the same loop. A step takes one global batch: this rank's
``accum_steps`` microbatches (DistributedSampler order), each backward inside
``no_sync()`` but the last, so the all-reduce runs once per step, overlapped with
the last backward. Then gradient clipping, the optimizer and the schedule. Rank 0
shows progress; every rank writes its metrics as JSON lines; checkpoints are
written by rank 0 between barriers.

A debug run (world size 1) reaches the same global batch by accumulating more
microbatches: step k uses exactly the samples the N-rank run uses at step k, so
the loss curves agree (to float rounding; exactly when dropout is off and the
ranks' summation order does not matter).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time

import numpy as np

from .. import distributed as dist
from ..dtype import set_default_dtype, to_dtype
from .. import cuda, nn, optim
from ..autograd.grad_mode import no_grad
from ..data.dataloader import default_collate
from ..data.sampler import DistributedSampler
from ..nn import functional as F
from ..random import default_generator, manual_seed
from . import checkpoint as ckpt
from .config import config_hash
from .datasets import build_datasets
from .models import build_model


def lr_lambda(cfg: dict):
    """The schedule as a factor of the peak learning rate, step by step."""
    s, total = cfg["schedule"], cfg["_total_steps"]
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


def build_optimizer(cfg: dict, model: nn.Module):
    o = cfg["optim"]
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": o["weight_decay"]}, {"params": rest, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if o["name"] == "sgd":
        return optim.SGD(groups, lr=o["lr"], momentum=o["momentum"], nesterov=o["nesterov"])
    cls = optim.AdamW if o["name"] == "adamw" else optim.Adam
    return cls(groups, lr=o["lr"], betas=tuple(o["betas"]), eps=o["eps"])


class _Progress:
    """A tqdm bar on rank 0 (plain log lines where there is no terminal)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True,
                            mininterval=0.5, file=sys.stdout, disable=not sys.stdout.isatty())

    def update(self, **postfix):
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def write(self, text: str):
        if self.bar is not None and not self.bar.disable:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


class Trainer:
    def __init__(self, cfg: dict, run_dir: str, resume: bool = False):
        self.cfg = cfg
        self.run_dir = run_dir
        self.resume = resume

    # ----------------------------------------------------------------- setup
    def _setup(self):
        cfg = self.cfg
        d = cfg["dist"]
        if not dist.is_initialized():
            dist.init_process_group(d["backend"], timeout=d["timeout_s"])
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if self.world != d["np"]:
            raise RuntimeError(
                f"this job has {self.world} ranks but its config was resolved for dist.np = {d['np']}; "
                "start it with distgrad-launch (or mpiexec -n {np}) so the batch arithmetic holds".replace(
                    "{np}", str(d["np"]))
            )
        t = cfg["train"]
        per_rank = t["global_batch"] // self.world
        if per_rank % t["micro_batch"] or t["global_batch"] % self.world:
            raise RuntimeError(
                f"train.global_batch = {t['global_batch']} cannot be split into microbatches of "
                f"{t['micro_batch']} on {self.world} ranks (the launcher checks this; was the config "
                "resolved for another world size?)"
            )
        self.accum = per_rank // t["micro_batch"]
        self.device = "cpu"
        if cfg["run"]["device"] == "cuda":
            # Each rank takes its own GPU on its node (they wrap around if there are fewer).
            local = dist.get_local_rank() % max(1, cuda.device_count())
            cuda.set_device(local)
            self.device = f"cuda:{local}"
        set_default_dtype(to_dtype(cfg["run"]["dtype"]))
        manual_seed(cfg["run"]["seed"])
        self.train_set, self.val_set, self.info = build_datasets(cfg)
        self.sampler = DistributedSampler(self.train_set, self.world, self.rank, shuffle=True,
                                          seed=cfg["run"]["seed"], drop_last=True)
        self.steps_per_epoch = len(self.sampler) // per_rank
        if self.steps_per_epoch == 0:
            raise RuntimeError(
                f"the training set ({len(self.train_set)} samples) is smaller than one global batch "
                f"({t['global_batch']}); lower train.global_batch"
            )
        self.total_steps = t["steps"] if t["steps"] is not None else t["epochs"] * self.steps_per_epoch
        cfg["_total_steps"] = self.total_steps
        self.model = build_model(cfg, self.info).to(self.device)
        self.ddp = None
        if self.world > 1:
            # Gradients as views of the buckets: the trainer clears .grad every step, so
            # nothing keeps an old gradient that the next step would overwrite.
            self.ddp = dist.DistributedDataParallel(
                self.model, bucket_cap_mb=d["bucket_cap_mb"], find_unused_parameters=d["find_unused_parameters"],
                gradient_as_bucket_view=True)
        self.optimizer = build_optimizer(cfg, self.model)
        self.scheduler = optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(cfg))
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.hash = config_hash(cfg)

    def _forward_loss(self, x, y):
        x, y = x.to(self.device), y.to(self.device)
        model = self.ddp if self.ddp is not None else self.model
        out = model(x)
        if out.dim() == 3:
            out = out.reshape(-1, out.shape[-1])
            y = y.reshape(-1)
        return F.cross_entropy(out, y), out, y

    # ------------------------------------------------------------------ data
    def _batches(self, epoch: int, skip: int):
        """This rank's microbatches of ``epoch``, grouped per step, from step ``skip``."""
        self.sampler.set_epoch(epoch)
        idx = list(self.sampler)
        mb = self.cfg["train"]["micro_batch"]
        fetch = getattr(self.train_set, "__getitems__", None)
        for s in range(skip, self.steps_per_epoch):
            step = []
            for a in range(self.accum):
                lo = (s * self.accum + a) * mb
                ids = idx[lo:lo + mb]
                samples = fetch(ids) if fetch else [self.train_set[i] for i in ids]
                step.append(default_collate(samples))
            yield step

    def _evaluate(self):
        """Loss and accuracy on the first ``eval_batches`` global batches of the
        validation set (the same samples whatever the world size)."""
        t = self.cfg["train"]
        model = self.ddp if self.ddp is not None else self.model
        total = min(len(self.val_set), t["eval_batches"] * t["global_batch"])
        idx = list(range(self.rank, total - total % self.world, self.world))
        mb = t["micro_batch"]
        fetch = getattr(self.val_set, "__getitems__", None)
        loss_sum = correct = count = 0.0
        model.eval()
        try:
            with no_grad():
                for lo in range(0, len(idx), mb):
                    ids = idx[lo:lo + mb]
                    x, y = default_collate(fetch(ids) if fetch else [self.val_set[i] for i in ids])
                    loss, out, yy = self._forward_loss(x, y)
                    n = yy.numel()
                    loss_sum += loss.item() * n
                    correct += (out.argmax(-1) == yy).sum().item()
                    count += n
        finally:
            model.train()
        totals = np.array([loss_sum, correct, count])
        if self.world > 1:
            dist.group.default_comm().allreduce_(totals)
        if totals[2] == 0:
            return None
        return {"eval_loss": totals[0] / totals[2], "eval_accuracy": totals[1] / totals[2]}

    # ----------------------------------------------------------- checkpoints
    def _save(self, step: int, epoch: int, batch: int):
        if self.rank == 0:
            meta = {"config_hash": self.hash, "epoch": epoch, "batch": batch,
                    "rng": default_generator._rng.bit_generator.state,
                    "rng_seed": default_generator.initial_seed(), "world_size": self.world}
            ckpt.save(self.run_dir, step, self.model, self.optimizer, self.scheduler, meta,
                      self.cfg["train"]["keep_checkpoints"])
        if self.world > 1:
            dist.barrier()

    def _restore(self):
        step = ckpt.latest(self.run_dir)
        if step is None:
            raise RuntimeError(f"--resume: no complete checkpoint in {self.run_dir}")
        meta = ckpt.load(self.run_dir, step, self.model, self.optimizer, self.scheduler)
        if meta["config_hash"] != self.hash:
            raise RuntimeError(
                f"--resume: the checkpoint in {self.run_dir} was made with a different config "
                f"(hash {meta['config_hash']}, this config {self.hash}); resume with the run's "
                "own config.toml, or start a new run"
            )
        default_generator._seed = meta["rng_seed"]
        default_generator._rng.bit_generator.state = meta["rng"]
        return step, meta["epoch"], meta["batch"]

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        self._setup()
        t = self.cfg["train"]
        step, epoch, batch = (self._restore() if self.resume else (0, 0, 0))
        os.makedirs(self.run_dir, exist_ok=True)
        # Line-buffered: the steps a failed job did finish are on disk.
        metrics = open(os.path.join(self.run_dir, f"metrics.rank{self.rank}.jsonl"), "a", buffering=1)
        progress = _Progress(self.rank == 0 and t["progress"], self.total_steps, step)
        tokens_per_sample = self.info.get("tokens_per_sample") or 0
        if self.rank == 0:
            progress.write(
                f"distgrad: {self.world} rank(s), global batch {t['global_batch']} = micro "
                f"{t['micro_batch']} x accum {self.accum} x world {self.world}; "
                f"{sum(p.numel() for p in self.params):,} parameters; {self.total_steps} steps; "
                f"run directory {self.run_dir}" + (f"; resuming at step {step}" if step else ""))
        if os.environ.get("DISTGRAD_MARK_FIRST_STEP") and self.rank == 0:
            print(f"DISTGRAD_FIRST_STEP {time.time():.6f}", flush=True)
        t0 = time.perf_counter()
        start_step, last = step, {}
        eval_result = None
        try:
            while step < self.total_steps:
                for micro in self._batches(epoch, batch):
                    loss_sum = self._train_step(micro)
                    step += 1
                    batch += 1
                    loss = self._global_mean(loss_sum)
                    elapsed = time.perf_counter() - t0
                    rate = (step - start_step) * t["global_batch"] / elapsed
                    last = {"step": step, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
                            "samples_per_s": rate, "tokens_per_s": rate * tokens_per_sample,
                            "local_loss": loss_sum / self.accum, "time": elapsed}
                    metrics.write(json.dumps(last) + "\n")
                    progress.update(loss=f"{loss:.4f}", lr=f"{last['lr']:.2e}",
                                    **({"tok/s": f"{last['tokens_per_s']:,.0f}"} if tokens_per_sample
                                       else {"samples/s": f"{rate:,.0f}"}))
                    if self.rank == 0 and (step % t["log_interval"] == 0 or step == self.total_steps):
                        progress.write(f"step {step:6d}  loss {loss:.4f}  lr {last['lr']:.3e}  "
                                       + (f"{last['tokens_per_s']:,.0f} tokens/s" if tokens_per_sample
                                          else f"{rate:,.0f} samples/s"))
                    if t["eval_interval"] and step % t["eval_interval"] == 0:
                        eval_result = self._log_eval(step, metrics, progress)
                    if step == self.total_steps or (t["checkpoint_interval"] and step % t["checkpoint_interval"] == 0):
                        end_of_epoch = batch == self.steps_per_epoch
                        self._save(step, epoch + 1 if end_of_epoch else epoch, 0 if end_of_epoch else batch)
                    if step == self.total_steps:
                        break
                else:
                    epoch, batch = epoch + 1, 0
                    continue
                break
            if not t["eval_interval"] or step % t["eval_interval"]:
                eval_result = self._log_eval(step, metrics, progress)
        except KeyboardInterrupt:
            progress.close()
            if self.rank == 0:
                last_ckpt = ckpt.latest(self.run_dir)
                print(f"\ndistgrad: interrupted at step {step}; the last checkpoint is "
                      f"{'step ' + str(last_ckpt) if last_ckpt is not None else 'none'} in {self.run_dir}",
                      flush=True)
            raise
        finally:
            metrics.close()
        progress.close()
        summary = dict(last, steps=step, world_size=self.world, run_dir=self.run_dir,
                       wall_time_s=time.perf_counter() - t0, **(eval_result or {}))
        if self.rank == 0:
            with open(os.path.join(self.run_dir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=1)
            extra = (f"  eval loss {summary['eval_loss']:.4f}  eval accuracy {summary['eval_accuracy']:.2%}"
                     if eval_result else "")
            print(f"done: {step} steps in {summary['wall_time_s']:.1f} s  final loss "
                  f"{summary.get('loss', float('nan')):.4f}{extra}\n"
                  f"run directory: {self.run_dir}", flush=True)
        return summary

    def _train_step(self, micro) -> float:
        self.optimizer.zero_grad()
        losses = []
        for i, (x, y) in enumerate(micro):
            sync = self.ddp is None or i == len(micro) - 1
            with (self.ddp.no_sync() if not sync else contextlib.nullcontext()):
                loss, _, _ = self._forward_loss(x, y)
                (loss / len(micro)).backward()
            losses.append(loss.detach())
        # Read once the step's work is queued (on a GPU, reading waits for it).
        loss_sum = sum(v.item() for v in losses)
        if self.cfg["optim"]["grad_clip"]:
            nn.utils.clip_grad_norm_(self.params, self.cfg["optim"]["grad_clip"])
        self.optimizer.step()
        self.scheduler.step()
        return loss_sum

    def _global_mean(self, loss_sum: float) -> float:
        """The step's loss over the global batch (every rank has as many samples)."""
        if self.world == 1:
            return loss_sum / self.accum
        v = np.array([loss_sum / self.accum])
        dist.group.default_comm().allreduce_(v)
        return float(v[0] / self.world)

    def _log_eval(self, step, metrics, progress):
        result = self._evaluate()
        if result is not None:
            metrics.write(json.dumps(dict(result, step=step)) + "\n")
            if self.rank == 0:
                progress.write(f"step {step:6d}  eval loss {result['eval_loss']:.4f}  "
                               f"eval accuracy {result['eval_accuracy']:.2%}")
        return result
