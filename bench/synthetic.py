"""Weak scaling on synthetic data, in the manner of Horovod's synthetic benchmark:
a GPT and a small ResNet-style CNN train with DistributedDataParallel on a fixed
random batch per rank, for 1, 2, 4, ... ranks (one BLAS thread each); it prints
samples/s per rank and in total, and the weak-scaling efficiency against 1 rank
(total samples/s over N ranks / (N x samples/s of 1 rank)).

    python bench/synthetic.py                     # 1, 2, 4, ... up to the cores here
    python bench/synthetic.py --np 1,2,4,8 --model gpt --steps 20
    python bench/synthetic.py --np 1,2 --link 1gbit   # ranks 0 and 1 in two network
                                                      # namespaces, over a shaped link

With ``--torch`` each point also runs PyTorch DDP (gloo) on the same model, data and
ranks (when PyTorch is installed) and prints distgrad's time per step against it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))

MODELS = ("gpt", "resnet")
BATCH = {"gpt": 16, "resnet": 32}


def make_resnet(lib, width=32, classes=10):
    """Stem, two residual blocks at 32x32, a strided block to 16x16 with twice the
    channels, pooling and a linear head (BatchNorm after every convolution)."""
    nn, F = lib.nn, lib.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else nn.Identity())

        def forward(self, x):
            y = F.relu(self.b1(self.c1(x)))
            return F.relu(self.b2(self.c2(y)) + self.skip(x))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
            self.blocks = nn.Sequential(Block(width, width, 1), Block(width, width, 1), Block(width, 2 * width, 2))
            self.head = nn.Linear(2 * width, classes)

        def forward(self, x):
            y = self.blocks(self.stem(x))
            return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))

    return Net()


def build(lib, name, rng):
    """(model, inputs, targets, loss function) of ``name`` for library ``lib``."""
    import numpy as np

    from train_step import make_gpt

    if name == "gpt":
        vocab, context = 256, 64
        model = make_gpt(lib, vocab=vocab, width=128, heads=4, layers=2, context=context)
        x = rng.integers(0, vocab, (BATCH[name], context))
        y = rng.integers(0, vocab, (BATCH[name], context))

        def loss(out, t):
            return lib.nn.functional.cross_entropy(out.reshape(-1, vocab), t.reshape(-1))
    else:
        model = make_resnet(lib)
        x = rng.standard_normal((BATCH[name], 3, 32, 32)).astype(np.float32)
        y = rng.integers(0, 10, (BATCH[name],))

        def loss(out, t):
            return lib.nn.functional.cross_entropy(out, t)
    return model, lib.tensor(x), lib.tensor(y), loss


# ------------------------------------------------------------------ one point
def worker(args) -> None:
    """Under mpiexec: time ``args.steps`` DDP steps of each model; rank 0 prints a JSON
    line per model with every rank's samples/s."""
    import numpy as np

    import distgrad as dg
    import distgrad.distributed as dist

    dist.init_process_group("mpi")
    rank, world = dist.get_rank(), dist.get_world_size()
    comm = dist.group.default_comm()
    torch = None
    if args.torch:
        try:
            import torch
            import torch.distributed as tdist
        except ImportError:
            torch = None
    if torch is not None:
        torch.set_num_threads(1)
        os.environ.setdefault("MASTER_ADDR", comm.comm.bcast(_address() if rank == 0 else None, root=0))
        os.environ.setdefault("MASTER_PORT", str(comm.comm.bcast(_free_port() if rank == 0 else None, root=0)))
        import datetime

        tdist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    for name in args.model:
        rng = np.random.default_rng(rank)
        model, x, y, loss_fn = build(dg, name, rng)
        ddp = dist.DistributedDataParallel(model, bucket_cap_mb=args.bucket_cap_mb) if world > 1 else model
        opt = dg.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        def step():
            opt.zero_grad()
            loss_fn(ddp(x), y).backward()
            opt.step()
        steps = {"distgrad": step}
        if torch is not None:
            tmodel, tx, ty, tloss = build(torch, name, np.random.default_rng(rank))
            tddp = (torch.nn.parallel.DistributedDataParallel(tmodel, bucket_cap_mb=args.bucket_cap_mb)
                    if world > 1 else tmodel)
            topt = torch.optim.SGD(tmodel.parameters(), lr=0.01, momentum=0.9)

            def tstep():
                topt.zero_grad()
                tloss(tddp(tx), ty).backward()
                topt.step()
            steps["torch"] = tstep
        mine = _time(steps, comm, args)
        every = comm.allgather_object(mine)
        if rank == 0:
            print("RESULT " + json.dumps({"model": name, "world": world, "batch": BATCH[name],
                                          "seconds_per_step": every}), flush=True)
    if torch is not None:
        tdist.destroy_process_group()
    dist.destroy_process_group()


def _time(steps: dict, comm, args) -> dict:
    """Seconds per step on this rank for each of ``steps``: the best of ``args.rounds``
    timed runs of ``args.steps`` steps, every rank starting together. Every library
    warms up (``args.warmup`` steps) before any is timed: a process's first seconds ran
    10-20 % slower here, whichever library ran in them (distgrad, timed first, took
    1.21-1.26 x PyTorch's step at 1 rank that way, and 0.97-1.01 x once both had warmed
    up)."""
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    best = {}
    for name, step in steps.items():
        best[name] = float("inf")
        for _ in range(args.rounds):
            comm.barrier()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            comm.barrier()
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    return best


def _address() -> str:
    """Rank 0's address for gloo: on a link, its namespace's end of the veth (the
    host name resolves to an address the other namespace cannot reach)."""
    return os.environ.get("DISTGRAD_LINK_MASTER", "127.0.0.1")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------- the driver
def _mpiexec() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = here if os.path.exists(here) else shutil.which("mpiexec")
    if found is None:
        sys.exit("mpiexec not found: pip install -e \".[mpi]\" (the mpich wheel provides it)")
    return found


def run_point(n: int, args, link=None) -> list:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--model", ",".join(args.model),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--rounds", str(args.rounds),
           "--bucket-cap-mb", str(args.bucket_cap_mb)] + (["--torch"] if args.torch else [])
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
               DISTGRAD_THREADS="1")
    if link is not None and n > 1:
        env.update(link.env())
        full = link.mpiexec(cmd, _mpiexec(), n)
    else:
        full = [_mpiexec(), "-n", str(n)] + cmd
    proc = subprocess.Popen(full, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)   # mpiexec and every rank it started here
        out, err = proc.communicate()
        sys.exit(f"{n} ranks did not finish within --timeout {args.timeout:.0f} s; stopped them:\n"
                 f"{out[-3000:]}\n{err[-3000:]}")
    if proc.returncode != 0:
        sys.exit(f"{n} ranks failed (exit status {proc.returncode}):\n{out[-3000:]}\n{err[-3000:]}")
    return [json.loads(line[len("RESULT "):]) for line in out.splitlines() if line.startswith("RESULT ")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--np", default=None, help="rank counts, e.g. 1,2,4,8 (default: powers of 2 up to the cores)")
    ap.add_argument("--model", default="gpt,resnet", help="gpt, resnet or both (comma-separated)")
    ap.add_argument("--steps", type=int, default=10, help="steps per timed round")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds; the best counts")
    ap.add_argument("--bucket-cap-mb", type=float, default=25.0)
    ap.add_argument("--torch", action="store_true", help="also run PyTorch DDP (gloo) at every point")
    ap.add_argument("--link", metavar="RATE", help="run across two network namespaces joined by a link "
                                                   "shaped to RATE (e.g. 1gbit; needs root, ip and tc)")
    ap.add_argument("--timeout", type=float, default=900, help="seconds one point may take")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.model = [m.strip() for m in args.model.split(",") if m.strip()]
    bad = [m for m in args.model if m not in MODELS]
    if bad:
        ap.error(f"--model {','.join(bad)}: choose from {', '.join(MODELS)}")
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    counts = ([int(v) for v in args.np.split(",")] if args.np else
              [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= cores])
    if 1 not in counts:
        counts = [1] + counts
    link_ctx = None
    if args.link:
        from _link import shaped_link
        link_ctx = shaped_link(args.link)
    print(f"{platform.machine()}, {cores} cores, Python {platform.python_version()}; one BLAS thread per rank; "
          f"best of {args.rounds} rounds of {args.steps} steps" + (f"; ranks across a {args.link} link" if args.link
                                                                  else ""), flush=True)
    from _isolated import blas_line
    print(blas_line(), flush=True)
    results = {}
    link = link_ctx.__enter__() if link_ctx is not None else None
    try:
        for n in counts:
            for r in run_point(n, args, link):
                results[(r["model"], n)] = r
    finally:
        if link_ctx is not None:
            link_ctx.__exit__(None, None, None)
    for name in args.model:
        print(f"\n{name} (batch {BATCH[name]} per rank)")
        head = f"{'ranks':>5}  {'samples/s per rank':>18}  {'total samples/s':>15}  {'efficiency':>10}"
        print(head + ("  vs PyTorch DDP (time/step)" if args.torch else ""))
        base = None
        for n in counts:
            r = results[(name, n)]
            per_step = [s["distgrad"] for s in r["seconds_per_step"]]
            total = n * r["batch"] / max(per_step)          # the slowest rank sets the pace
            per_rank = total / n
            base = per_rank if n == 1 else base
            line = f"{n:>5}  {per_rank:>18.1f}  {total:>15.1f}  {per_rank / base:>10.1%}"
            if args.torch and "torch" in r["seconds_per_step"][0]:
                t = max(s["torch"] for s in r["seconds_per_step"])
                line += f"  {max(per_step) / t:.2f}x"
            print(line)


if __name__ == "__main__":
    main()
