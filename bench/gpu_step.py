"""Training steps on one GPU, distgrad against PyTorch eager in the same run, fp32
with TF32 off on both:

- MLP: batch 512, 1024 -> 4096 x4 -> 1000, cross-entropy, SGD;
- GPT-mini: vocab 4096, width 512, 8 heads, 6 layers, context 256, batch 32, AdamW;

each without and with activation checkpointing per block. Prints step times, their
ratios, and peak GPU memory (CuPy's pool against torch.cuda.max_memory_allocated).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback

import numpy as np

import distgrad as dg

try:
    import torch
except ImportError:
    torch = None


def mlp(lib, checkpoint):
    nn = lib.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            dims = [1024, 4096, 4096, 4096, 4096]
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(dims, dims[1:])])
            self.head = nn.Linear(4096, 1000)

        def forward(self, x):
            for b in self.blocks:
                x = _ckpt(lib, b, x) if checkpoint else b(x)
            return self.head(x)

    return MLP()


def _ckpt(lib, fn, x):
    return lib.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)


def gpt(lib, checkpoint, vocab=4096, width=512, heads=8, layers=6, context=256):
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.fc, self.out = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(lib.arange(idx.shape[1], device=idx.device))
            for b in self.blocks:
                x = _ckpt(lib, b, x) if checkpoint else b(x)
            return self.head(self.ln_f(x))

    return GPT()


def job(lib, name, checkpoint, precision="fp32"):
    rng = np.random.default_rng(0)
    dev = "cuda"
    if name == "MLP":
        model = mlp(lib, checkpoint).to(dev)
        x = lib.tensor(rng.standard_normal((512, 1024)).astype(np.float32), device=dev)
        y = lib.tensor(rng.integers(0, 1000, 512), device=dev)
        opt = lib.optim.SGD(model.parameters(), lr=0.01)
    else:
        model = gpt(lib, checkpoint).to(dev)
        x = lib.tensor(rng.integers(0, 4096, (32, 256)), device=dev)
        y = lib.tensor(rng.integers(0, 4096, 32 * 256), device=dev)
        opt = lib.optim.AdamW(model.parameters(), lr=1e-4)

    low = lib.bfloat16 if precision == "bf16" else None

    def step():
        with lib.autocast("cuda", dtype=low, enabled=low is not None):
            out = model(x)
            loss = lib.nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss

    return step


def sync(lib):
    lib.cuda.synchronize()


def _peak_of_step(lib, step):
    """Peak GPU memory in use during one step: torch's allocator statistics, and for
    distgrad a CuPy memory hook that follows the pool's allocations and frees."""
    if lib is torch:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    cp = dg.backend.cupy()
    pool = cp.get_default_memory_pool()

    class Peak(cp.cuda.MemoryHook):
        name = "distgrad_bench_peak"

        def __init__(self):
            self.used = self.peak = pool.used_bytes()

        def malloc_postprocess(self, **kw):
            self.used += kw["mem_size"]
            self.peak = max(self.peak, self.used)

        def free_postprocess(self, **kw):
            self.used -= kw["mem_size"]

    sync(dg)
    hook = Peak()
    with hook:
        step()
        sync(dg)
    return hook.peak


def measure(lib, name, checkpoint, steps, rounds, precision="fp32"):
    if lib is torch:
        torch.cuda.empty_cache()
    else:
        dg.cuda.empty_cache()
    step = job(lib, name, checkpoint, precision)
    for _ in range(2):
        step()
    sync(lib)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        sync(lib)
        best = min(best, (time.perf_counter() - t0) / steps)
    peak = _peak_of_step(lib, step)
    del step
    return best, peak


def host_share(lib, step, n=5):
    """Host time until ``step()`` returns against the step's whole time, averaged over
    ``n`` steps that each start on an idle GPU: near 1 means the GPU waits on Python."""
    host = total = 0.0
    for _ in range(n):
        sync(lib)
        t0 = time.perf_counter()
        step()
        t1 = time.perf_counter()
        sync(lib)
        host += t1 - t0
        total += time.perf_counter() - t0
    return host / n, total / n


def kernels(name, steps=2, top=22):
    """GPU kernel times of a distgrad step and a PyTorch step, from PyTorch's profiler
    (CUPTI sees every kernel in the process, CuPy's included)."""
    from torch.profiler import ProfilerActivity, profile as tprofile

    for lib in (dg, torch):
        step = job(lib, name, False)
        step()
        sync(lib)
        h, t = host_share(lib, step)
        print(f"--- {lib.__name__} {name}: host {h * 1e3:.1f} ms of a {t * 1e3:.1f} ms step (idle GPU at start)")
        with tprofile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                step()
            sync(lib)
        events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        attr = "device_time_total" if hasattr(events[0], "device_time_total") else "cuda_time_total"
        events.sort(key=lambda e: getattr(e, attr), reverse=True)
        total = sum(getattr(e, attr) for e in events)
        print(f"    GPU kernel time {total / steps / 1e3:.1f} ms per step in {sum(e.count for e in events) // steps} "
              f"launches; the top {top}:")
        for e in events[:top]:
            print(f"    {getattr(e, attr) / steps / 1e3:7.2f} ms {e.count // steps:5d}x  {e.key[:110]}")
        del step


def profile(name, steps):
    """The Python functions distgrad's step spends its time in (host side)."""
    import cProfile
    import pstats

    step = job(dg, name, False)
    step()
    sync(dg)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    sync(dg)
    prof.disable()
    print(f"--- profile of {steps} distgrad {name} steps (host time, by own time)")
    pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--models", default="MLP,GPT-mini", help="comma-separated: MLP, GPT-mini")
    ap.add_argument("--profile", action="store_true", help="also print a host-side profile of each model's step")
    ap.add_argument("--kernels", action="store_true",
                    help="also print the GPU kernels of each model's step, distgrad's and PyTorch's")
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    if not dg.cuda.is_available():
        sys.exit("bench/gpu_step.py needs a GPU (CuPy and CUDA); none is available here")
    if torch is not None:
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"GPU: {dg.backend.cupy().cuda.runtime.getDeviceProperties(0)['name'].decode()}; fp32, TF32 off; "
          f"best of {args.rounds} rounds of {args.steps} steps")
    for name in args.models.split(","):
        if args.profile:
            profile(name, args.steps)
        if args.kernels and torch is not None:
            kernels(name)
        res = {}
        for ck in (False, True):
            for lib in ([dg] + ([torch] if torch is not None else [])):
                try:
                    res[(lib.__name__, ck)] = measure(lib, name, ck, args.steps, args.rounds)
                except Exception:  # report and go on with the other runs
                    traceback.print_exc()
                    res[(lib.__name__, ck)] = (float("nan"), 0)
        for ck in (False, True):
            t, m = res[("distgrad", ck)]
            line = f"{name}{' + checkpointing' if ck else ''}: distgrad {t * 1e3:7.1f} ms, peak {m / 2 ** 30:5.2f} GiB"
            if torch is not None:
                tt, tm = res[("torch", ck)]
                line += (f" | torch {tt * 1e3:7.1f} ms, peak {tm / 2 ** 30:5.2f} GiB | "
                         f"time ratio {t / tt:.2f} x (goal <= 1.1)")
            print(line)
        t0, m0 = res[("distgrad", False)]
        t1, m1 = res[("distgrad", True)]
        m0 = m0 or float("nan")
        print(f"{name} checkpointing in distgrad: peak {m1 / m0:.2f} x (goal <= 0.4) at {t1 / t0:.2f} x the time (goal <= 1.3)")
        # bfloat16 autocast (float32 weights), against PyTorch's eager autocast
        bf = {}
        for lib in ([dg] + ([torch] if torch is not None else [])):
            try:
                bf[lib.__name__] = measure(lib, name, False, args.steps, args.rounds, "bf16")
            except Exception:  # e.g. a CuPy without bfloat16 (CuPy < 14): reported, the rest goes on
                traceback.print_exc()
                bf[lib.__name__] = (float("nan"), 0)
        t, m = bf["distgrad"]
        line = f"{name} bf16 autocast: distgrad {t * 1e3:7.1f} ms, peak {m / 2 ** 30:5.2f} GiB"
        if torch is not None:
            tt, tm = bf["torch"]
            line += (f" | torch {tt * 1e3:7.1f} ms, peak {tm / 2 ** 30:5.2f} GiB | "
                     f"time ratio {t / tt:.2f} x (goal <= 1.0)")
        print(line)


if __name__ == "__main__":
    main()
