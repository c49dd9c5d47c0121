"""Gradient checkpointing: peak memory and step time of forward + backward.

A 16-layer tanh MLP (width 512, batch 256), run three ways:
- no checkpointing,
- one checkpoint per layer (``checkpoint(layer, x)``),
- ``checkpoint_sequential`` with 4 segments.

Peak memory is what tracemalloc sees numpy allocate during one forward+backward,
above what was allocated before it (parameters, and gradients kept from the
previous step). Times are the best of several rounds, measured without tracemalloc.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
import tracemalloc

import numpy as np

import distgrad as dg
import distgrad.nn as nn
from distgrad.utils.checkpoint import checkpoint, checkpoint_sequential

DEPTH, WIDTH, BATCH = 16, 512, 256


def make_model():
    dg.manual_seed(0)
    return nn.Sequential(*[m for _ in range(DEPTH) for m in (nn.Linear(WIDTH, WIDTH), nn.Tanh())])


def forward(model, x, mode):
    if mode == "none":
        return model(x)
    if mode == "per layer":
        layers = list(model.children())
        for i in range(0, len(layers), 2):
            x = checkpoint(model[i:i + 2], x)
        return x
    return checkpoint_sequential(model, 4, x)


def step(model, x, mode):
    model.zero_grad(set_to_none=False)
    forward(model, x, mode).square().mean().backward()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    model = make_model()
    x = dg.randn(BATCH, WIDTH)
    modes = ("none", "per layer", "4 segments")
    grads = {}
    for mode in modes:  # warm-up; also allocates .grad once, so later steps reuse it
        step(model, x, mode)
        grads[mode] = [p.grad.numpy().copy() for p in model.parameters()]
    exact = all(all(np.array_equal(a, b) for a, b in zip(grads["none"], grads[m])) for m in modes)

    peak = {}
    for mode in modes:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        step(model, x, mode)
        peak[mode] = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
    best = {m: float("inf") for m in modes}
    for _ in range(args.rounds):
        for mode in modes:
            t0 = time.perf_counter()
            step(model, x, mode)
            best[mode] = min(best[mode], time.perf_counter() - t0)

    act = BATCH * WIDTH * 4 / 2 ** 20
    print(f"{DEPTH}-layer tanh MLP, width {WIDTH}, batch {BATCH} (one activation is {act:.2f} MiB); "
          f"{platform.machine()}, {os.cpu_count()} cores")
    print(f"gradients identical with and without checkpointing: {exact}")
    for mode in modes:
        print(f"  {mode:<11} peak {peak[mode] / 2 ** 20:7.2f} MiB ({peak[mode] / peak['none']:.2f} x)   "
              f"time {best[mode] * 1e3:7.1f} ms ({best[mode] / best['none']:.2f} x)")
    print("goal: peak <= 0.35 x at <= 1.35 x the time")


if __name__ == "__main__":
    main()
