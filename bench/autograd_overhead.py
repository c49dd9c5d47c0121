"""Per-op overhead of autograd: forward + backward over a 200-op chain on 16-element
tensors, distgrad against PyTorch (CPU, when installed) and plain numpy (forward only).

Prints per-op times and their ratios. Timings interleave the contenders round by
round and keep each one's best round, since shared machines are noisy.
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np

import distgrad as dg

try:
    import torch
except ImportError:  # PyTorch is optional: the comparison is skipped without it
    torch = None

N_OPS = 200
SIZE = 16


def chain(x, w):
    """The op mix: tensor*tensor, sin, +scalar, tanh (50 of each)."""
    y = x
    for _ in range(N_OPS // 4):
        y = y * w
        y = y.sin()
        y = y + 1.0
        y = y.tanh()
    return y


def numpy_chain(x, w):
    y = x
    for _ in range(N_OPS // 4):
        y = y * w
        y = np.sin(y)
        y = y + 1.0
        y = np.tanh(y)
    return y


def step_distgrad(x, w):
    x.grad = None
    w.grad = None
    chain(x, w).sum().backward()


def step_torch(x, w):
    x.grad = None
    w.grad = None
    chain(x, w).sum().backward()


def best_of(fn, args, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--reps", type=int, default=20, help="timed calls per round")
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    xa = rng.standard_normal(SIZE).astype(np.float32)
    wa = rng.standard_normal(SIZE).astype(np.float32)
    contenders = {
        "numpy (forward only)": (numpy_chain, (xa, wa)),
        "distgrad": (step_distgrad, (dg.tensor(xa, requires_grad=True), dg.tensor(wa, requires_grad=True))),
    }
    if torch is not None:
        torch.set_num_threads(1)
        contenders["torch"] = (step_torch, (torch.tensor(xa, requires_grad=True), torch.tensor(wa, requires_grad=True)))
        dx = contenders["distgrad"][1]
        tx = contenders["torch"][1]
        step_distgrad(*dx)
        step_torch(*tx)
        assert np.allclose(dx[0].grad.numpy(), tx[0].grad.numpy(), rtol=1e-4, atol=1e-5), "gradients differ"

    best = {k: float("inf") for k in contenders}
    for _ in range(args.rounds):
        for name, (fn, fargs) in contenders.items():
            best[name] = min(best[name], best_of(fn, fargs, args.reps))

    per_op = {k: v / N_OPS * 1e6 for k, v in best.items()}
    print(f"autograd overhead: {N_OPS}-op chain on {SIZE}-element float32 tensors, forward+backward")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"numpy {np.__version__}" + (f", torch {torch.__version__} (1 thread)" if torch else ""))
    for name, us in per_op.items():
        print(f"  {name:<22} {us:8.2f} us/op")
    np_us = per_op["numpy (forward only)"]
    print(f"  distgrad / numpy       {per_op['distgrad'] / np_us:8.2f} x")
    if torch is not None:
        print(f"  torch / numpy          {per_op['torch'] / np_us:8.2f} x")
        print(f"  distgrad / torch       {per_op['distgrad'] / per_op['torch']:8.2f} x   (goal <= 1.0)")
        over_dg = per_op["distgrad"] - np_us
        over_t = per_op["torch"] - np_us
        print(f"  overhead above numpy: distgrad {over_dg:.2f} us/op, torch {over_t:.2f} us/op, "
              f"ratio {over_dg / over_t:.2f} x")
    else:
        print("  (PyTorch not installed: pip install torch to compare)")


if __name__ == "__main__":
    main()
