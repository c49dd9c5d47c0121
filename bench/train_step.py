"""One training step (forward, backward, optimizer) of two models, distgrad against
PyTorch on the CPU in the same run.

- MLP: batch 128, 784-1024-1024-10 with ReLU, cross-entropy, SGD with momentum.
- GPT-mini: vocab 256, width 128, 4 heads, 2 layers, context 64, batch 8, AdamW.
- GPT 8 blocks: the same model with 8 layers, context 128, batch 16 and exact (erf) GELU.

Both libraries run the same model code (distgrad's API is PyTorch's) from the
same initial weights; the first steps' losses are compared as a correctness
check. Each library is timed in processes of its own, one after the other round
by round (see ``_isolated.py`` for why), keeping each one's best round;
``--numpy-bodies`` adds distgrad with its CPU kernels' numpy bodies (what runs
with ``DISTGRAD_NUMBA=0`` or without numba) to the same rounds.
``--same-process`` times them in this one process instead, interleaved, as this
script did before (where they slow each other down).
"""
from __future__ import annotations

import argparse
import contextlib
import math

import numpy as np

import distgrad as dg
from distgrad.ops import _jit_kernels

import _isolated

torch = _isolated.import_torch()  # None without PyTorch (the comparison is skipped) and in distgrad's processes


def make_mlp(lib):
    nn = lib.nn
    return nn.Sequential(nn.Linear(784, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(),
                         nn.Linear(1024, 10))


def make_gpt(lib, vocab=256, width=128, heads=4, layers=2, context=64, gelu="tanh"):
    nn, F = lib.nn, lib.nn.functional

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)

        def forward(self, x):
            B, T, C = x.shape
            q, k, v = self.qkv(x).split(C, dim=2)
            q = q.view(B, T, heads, C // heads).transpose(1, 2)
            k = k.view(B, T, heads, C // heads).transpose(1, 2)
            v = v.view(B, T, heads, C // heads).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            return self.proj(y.transpose(1, 2).reshape(B, T, C))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1 = nn.LayerNorm(width)
            self.attn = Attention()
            self.ln2 = nn.LayerNorm(width)
            self.fc = nn.Linear(width, 4 * width)
            self.out = nn.Linear(4 * width, width)

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.out(F.gelu(self.fc(self.ln2(x)), approximate=gelu))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab, width)
            self.pos = nn.Embedding(context, width)
            self.blocks = nn.ModuleList([Block() for _ in range(layers)])
            self.ln_f = nn.LayerNorm(width)
            self.head = nn.Linear(width, vocab, bias=False)

        def forward(self, idx):
            x = self.tok(idx) + self.pos(lib.arange(idx.shape[1]))
            for b in self.blocks:
                x = b(x)
            return self.head(self.ln_f(x))

    return GPT()


def copy_weights(src, dst):
    """Give the PyTorch model the distgrad model's initial weights."""
    sd = {k: torch.tensor(v.numpy()) for k, v in src.state_dict().items()}
    dst.load_state_dict(sd)


class Job:
    def __init__(self, lib, model, make_opt, x, y, flatten_logits):
        self.lib, self.model, self.x, self.y = lib, model, x, y
        self.opt = make_opt(model.parameters())
        self.flatten = flatten_logits

    def step(self):
        logits = self.model(self.x)
        if self.flatten:
            logits = logits.view(-1, logits.shape[-1])
        loss = self.lib.nn.functional.cross_entropy(logits, self.y)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


# name -> (make_gpt keyword arguments, batch); the MLP has a model of its own
GPTS = {"GPT-mini": ({}, 8),
        "GPT 8 blocks (width 128, context 128, batch 16, exact GELU)":
            ({"layers": 8, "context": 128, "gelu": "none"}, 16)}


def build(name):
    rng = np.random.default_rng(0)
    dg.manual_seed(0)
    if name == "MLP":
        xs, ys = rng.standard_normal((128, 784)).astype(np.float32), rng.integers(0, 10, 128)
        make = make_mlp
        opt = lambda lib: (lambda p: lib.optim.SGD(p, lr=0.01, momentum=0.9))  # noqa: E731
        flat = False
    else:
        kw, batch = GPTS[name]
        context = kw.get("context", 64)
        xs, ys = rng.integers(0, 256, (batch, context)), rng.integers(0, 256, batch * context)
        make = lambda lib: make_gpt(lib, **kw)  # noqa: E731
        opt = lambda lib: (lambda p: lib.optim.AdamW(p, lr=1e-3))  # noqa: E731
        flat = True
    model = make(dg)
    jobs = {"distgrad": Job(dg, model, opt(dg), dg.tensor(xs), dg.tensor(ys), flat)}
    if torch is not None:
        tmodel = make(torch)
        copy_weights(model, tmodel)
        jobs["torch"] = Job(torch, tmodel, opt(torch), torch.tensor(xs), torch.tensor(ys), flat)
    return jobs


@contextlib.contextmanager
def _numpy_bodies(on):
    """The CPU kernels' numpy bodies instead of the compiled ones, for a while."""
    saved = _jit_kernels._kernels, _jit_kernels._failed
    if on:
        _jit_kernels._kernels, _jit_kernels._failed = None, True
    try:
        yield
    finally:
        _jit_kernels._kernels, _jit_kernels._failed = saved


MODELS = ("MLP", *GPTS)


def child(lib, steps):
    """``--child LIB``: warm up and time one library's steps in this process, and
    report {model: seconds per step}."""
    _isolated.report(_isolated.time_models(build, MODELS, lib, steps))


def isolated(args):
    """Each contender in processes of its own, alternating round by round."""
    rounds = _isolated.run_rounds(__file__, _isolated.contenders(torch is not None, args.numpy_bodies),
                                  args.rounds, _isolated.child_args(args))
    for name in MODELS:
        print(_isolated.line(name, rounds, 1.0 if "8 blocks" in name else 1.2))


def same_process(args):
    """The contenders in this one process, interleaved round by round (see above)."""
    for name in MODELS:
        jobs = build(name)
        contenders = list(jobs)
        if args.numpy_bodies and _jit_kernels.get() is not None:
            contenders.insert(1, "numpy bodies")  # the distgrad job, its kernels' numpy bodies
        best = {k: math.inf for k in contenders}
        for _ in range(args.rounds):
            for k in contenders:
                j = jobs.get(k, jobs["distgrad"])
                with _numpy_bodies(k == "numpy bodies"):
                    best[k] = min(best[k], _isolated.best_of(j.step, 1, args.steps))
        line = f"{name} (one process): distgrad {best['distgrad'] * 1e3:.2f} ms/step"
        if "numpy bodies" in best:
            line += f" (with the kernels' numpy bodies {best['numpy bodies'] * 1e3:.2f})"
        if torch is not None:
            line += (f", torch {best['torch'] * 1e3:.2f} ms/step, "
                     f"distgrad / torch {best['distgrad'] / best['torch']:.2f} x")
            if "numpy bodies" in best:
                line += f"; numpy bodies / torch {best['numpy bodies'] / best['torch']:.2f} x"
        print(line)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _isolated.add_arguments(ap)
    ap.add_argument("--numpy-bodies", action="store_true",
                    help="also time distgrad with its CPU kernels' numpy bodies (as with "
                         "DISTGRAD_NUMBA=0), in the same rounds")
    ap.add_argument("--same-process", action="store_true",
                    help="time the libraries in this one process, interleaved (see above), instead "
                         "of each in processes of its own")
    args = _isolated.start(ap, dg, torch, build, MODELS, child)
    if args is None:  # a child process: it has timed and reported
        return
    if args.same_process:
        same_process(args)
    else:
        print(f"each library in processes of its own, {args.rounds} alternating rounds")
        isolated(args)


if __name__ == "__main__":
    main()
