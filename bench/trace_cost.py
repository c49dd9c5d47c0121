"""What recording a timeline costs: training steps of the trainer's GPT (width 128, 2
blocks, context 64, batch 16, AdamW) without a profiler, under ``distgrad.profiler``
as a traced step records it (phases, module forwards, backward), and with each
autograd node recorded too; and, for scale, PyTorch's profiler on the same model.

Also the cost of a hook point when nothing records: ``profiler.span`` entered and
left, against an empty ``with`` block. Timings interleave the variants round by round
and keep each one's best round (shared machines are noisy).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
import time

import numpy as np

import distgrad as dg
from distgrad import profiler

sys.path.insert(0, os.path.dirname(__file__))
from train_step import make_gpt  # noqa: E402

try:
    import torch
except ImportError:  # the PyTorch row is skipped without it
    torch = None

BATCH, CONTEXT, VOCAB = 16, 64, 256


def stepper(lib, model, x, y):
    opt = lib.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = lib.nn.functional.cross_entropy

    def step():
        opt.zero_grad()
        out = model(x)
        loss_fn(out.reshape(-1, VOCAB), y.reshape(-1)).backward()
        opt.step()
    return step


def best(fn, ctx, steps):
    with ctx():
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        return (time.perf_counter() - t0) / steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    xs = rng.integers(0, VOCAB, (BATCH, CONTEXT))
    ys = rng.integers(0, VOCAB, (BATCH, CONTEXT))
    model = make_gpt(dg, vocab=VOCAB, context=CONTEXT)
    step = stepper(dg, model, dg.tensor(xs), dg.tensor(ys))
    variants = {
        "no profiler": contextlib.nullcontext,
        "traced step (phases, modules, backward)": lambda: profiler.profile(record_autograd_nodes=False),
        "traced step with every autograd node": profiler.profile,
    }
    if torch is not None:
        torch.set_num_threads(dg.get_num_threads())
        tmodel = make_gpt(torch, vocab=VOCAB, context=CONTEXT)
        tstep = stepper(torch, tmodel, torch.tensor(xs), torch.tensor(ys))
        tvariants = {"PyTorch, no profiler": contextlib.nullcontext,
                     "PyTorch under torch.profiler.profile": torch.profiler.profile}
    times = {}
    step()  # warm up
    if torch is not None:
        tstep()
    for _ in range(args.rounds):
        for name, ctx in variants.items():
            times[name] = min(times.get(name, float("inf")), best(step, ctx, args.steps))
        if torch is not None:
            for name, ctx in tvariants.items():
                times[name] = min(times.get(name, float("inf")), best(tstep, ctx, args.steps))

    # A hook point with no profiler: profiler.span() entered and left, per call.
    n = 200_000
    hook, empty = float("inf"), float("inf")
    for _ in range(args.rounds * 2):
        t0 = time.perf_counter()
        for _ in range(n):
            with profiler.span("x"):
                pass
        t1 = time.perf_counter()
        for _ in range(n):
            with contextlib.nullcontext():
                pass
        hook, empty = min(hook, (t1 - t0) / n), min(empty, (time.perf_counter() - t1) / n)

    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__}" if torch else ""))
    print(f"GPT width 128, 2 blocks, context {CONTEXT}, batch {BATCH}; best of {args.rounds} rounds "
          f"of {args.steps} steps")
    base = times["no profiler"]
    for name in variants:
        print(f"  {name:<45} {times[name] * 1e3:8.2f} ms/step  {times[name] / base:5.2f}x")
    if torch is not None:
        tbase = times["PyTorch, no profiler"]
        for name in tvariants:
            print(f"  {name:<45} {times[name] * 1e3:8.2f} ms/step  {times[name] / tbase:5.2f}x")
    print(f"a hook point with no profiler: {hook * 1e9:.0f} ns per call (an empty 'with' block: "
          f"{empty * 1e9:.0f} ns)")


if __name__ == "__main__":
    main()
