"""Timing each library in processes of its own, for the CPU step benchmarks.

In one process, distgrad and PyTorch share what the process has set up and slow
each other down: both keep their threads after a product (OpenBLAS's spin,
PyTorch's OpenMP threads wait), so on 2 cores PyTorch's small-model steps took
twice their time alone; and PyTorch's large frees raise glibc's mmap threshold,
which sped distgrad's GPT steps up by a quarter before distgrad raised it itself
(``distgrad/_malloc.py``). So a benchmark starts one process per contender and
round, alternating, and each process times one library only. PyTorch's runs with
distgrad's allocator settings left off (``DISTGRAD_MALLOC=0``), as a program that
imports torch alone has them; distgrad's does not load PyTorch at all.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

CHILD_VAR = "_DISTGRAD_BENCH_CHILD"   # the library a child process times


def child_library() -> str | None:
    return os.environ.get(CHILD_VAR)


def import_torch():
    """PyTorch, or None where it is not installed or in a child that times distgrad."""
    if child_library() == "distgrad":
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


def contenders(with_torch: bool, numpy_bodies: bool = False) -> list:
    """(label, library, extra environment) for each contender."""
    out = [("distgrad", "distgrad", {})]
    if numpy_bodies:
        out.append(("numpy bodies", "distgrad", {"DISTGRAD_NUMBA": "0"}))
    if with_torch:
        out.append(("torch", "torch", {"DISTGRAD_MALLOC": "0"}))
    return out


def best_of(fn, rounds: int, steps: int) -> float:
    """Seconds per call of ``fn``: the best of ``rounds`` rounds of ``steps`` calls."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, (time.perf_counter() - t0) / steps)
    return best


def time_models(build, models, lib: str, steps: int) -> dict:
    """In a child: each model's ``lib`` job (``build(name)[lib]``) warmed up for 3 steps,
    then {model: seconds per step, the best of 2 rounds}."""
    out = {}
    for name in models:
        job = build(name)[lib]  # a torch process builds distgrad's model too, for its weights
        for _ in range(3):
            job.step()
        out[name] = best_of(job.step, 2, steps)
    return out


def report(times: dict) -> None:
    """In a child: {model: seconds per step} for the parent."""
    print(json.dumps(times))


def run_rounds(script: str, entrants: list, rounds: int, child_args: list) -> dict:
    """Start ``script --child LIB *child_args`` for each entrant, round after round;
    returns {label: {model: [seconds per step, one per round]}}."""
    out = {label: {} for label, _, _ in entrants}
    for _ in range(rounds):
        for label, lib, extra in entrants:
            env = dict(os.environ, **{CHILD_VAR: lib}, **extra)
            cmd = [sys.executable, os.path.abspath(script), "--child", lib, *child_args]
            res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if res.returncode != 0:
                raise SystemExit(f"{os.path.basename(script)}: the {label} process failed "
                                 f"(status {res.returncode}):\n{res.stderr}")
            for name, t in json.loads(res.stdout.strip().splitlines()[-1]).items():
                out[label].setdefault(name, []).append(t)
    return out


def line(name: str, rounds: dict, goal: float) -> str:
    """One model's result: each contender's best round, distgrad / torch on those, and
    the median over rounds of the per-round ratio."""
    best = {label: min(r[name]) for label, r in rounds.items()}
    text = f"{name}: distgrad {best['distgrad'] * 1e3:.2f} ms/step"
    if "numpy bodies" in best:
        text += f" (with the kernels' numpy bodies {best['numpy bodies'] * 1e3:.2f})"
    if "torch" in best:
        ratios = np.array(rounds["distgrad"][name]) / np.array(rounds["torch"][name])
        text += (f", torch {best['torch'] * 1e3:.2f} ms/step, distgrad / torch "
                 f"{best['distgrad'] / best['torch']:.2f} x (median over rounds {np.median(ratios):.2f}; "
                 f"goal <= {goal})")
        if "numpy bodies" in best:
            text += f"; numpy bodies / torch {best['numpy bodies'] / best['torch']:.2f} x"
    return text


def add_arguments(ap) -> None:
    """The options both CPU step benchmarks take (``--child`` is their own, hidden)."""
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per round")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for both libraries (default: each library's own choice)")
    ap.add_argument("--child", choices=("distgrad", "torch"), help=argparse.SUPPRESS)


def child_args(args) -> list:
    """What a child process is started with, from the parent's options."""
    return ["--steps", str(args.steps)] + (["--threads", str(args.threads)] if args.threads else [])


def set_threads(args, dg, torch) -> None:
    if args.child == "torch" and torch is None:
        raise SystemExit("--child torch needs PyTorch")
    if args.threads:
        dg.set_num_threads(args.threads)
        if torch is not None:
            torch.set_num_threads(args.threads)


def _blas_kernels() -> str | None:
    """The BLAS numpy runs here, with the kernels it chose for this CPU (OpenBLAS
    picks them at load time), or None where threadpoolctl cannot tell."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not libs:
        return None
    lib = libs[0]
    text = f"{lib.get('internal_api')} {lib.get('version')}"
    if lib.get("architecture"):
        text += f" ({lib['architecture']} kernels)"
    return text


def blas_line() -> str:
    """numpy's BLAS and its kernels, and, where ``OPENBLAS_CORETYPE`` chose them,
    the kernels OpenBLAS would pick for this CPU by itself (from a child process
    without the variable): distgrad's products run on them, PyTorch's do not."""
    here = _blas_kernels()
    if here is None:
        return "numpy's BLAS: unknown (threadpoolctl not installed)"
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if not forced:
        return f"numpy's BLAS: {here}"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    probe = "import sys; sys.path.insert(0, sys.argv[1]); import _isolated; print(_isolated._blas_kernels())"
    own = subprocess.run([sys.executable, "-c", probe, os.path.dirname(os.path.abspath(__file__))], env=env,
                         capture_output=True, text=True, timeout=60).stdout.strip()
    return (f"numpy's BLAS: {here}, chosen by OPENBLAS_CORETYPE={forced} in this environment; "
            f"without it: {own or 'unknown'}")


def machine_line(torch) -> str:
    return (f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"numpy {np.__version__}"
            + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else "")
            + f"\n{blas_line()}")


def check_losses(build, models) -> None:
    """The first steps' losses of both libraries from the same weights (one process)."""
    for name in models:
        jobs = build(name)
        losses = {k: [j.step() for _ in range(3)] for k, j in jobs.items()}
        agree = np.allclose(losses["distgrad"], losses["torch"], rtol=1e-3, atol=1e-4)
        print(f"{name}: first losses distgrad {np.round(losses['distgrad'], 4).tolist()} "
              f"torch {np.round(losses['torch'], 4).tolist()} -> {'agree' if agree else 'DIFFER'}")


def start(ap, dg, torch, build, models, child):
    """Parse the options and set the threads. In a child process, run ``child(lib,
    steps)`` and return None; in the parent, print the machine and the loss check
    and return the options."""
    args = ap.parse_args()
    set_threads(args, dg, torch)
    if args.child:
        child(args.child, args.steps)
        return None
    print(machine_line(torch))
    if torch is not None:
        check_losses(build, models)
    return args
