"""How much of DistributedDataParallel's communication hides behind backward, and
the DDP step against PyTorch DDP (gloo) on the same model, ranks and data.

- backward alone: inside ``no_sync()`` (no communication),
- communication alone: what DDP adds to a backward that computes next to nothing
  but still hands every gradient to DDP (that backward with DDP, minus it inside
  ``no_sync()``): the copies into the buckets, the all-reduces and the copies
  back (the raw all-reduce of the same buckets is printed too),
- backward with DDP: the real thing.
Hidden fraction = (backward alone + communication alone - backward with DDP) /
communication alone.

Run it directly (it starts ``mpiexec -n 2`` with one BLAS thread per rank) or under
``mpiexec -n N python bench/ddp_overlap.py``.
"""
from __future__ import annotations

import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _mpi import allreduce_buckets, nprocs_arg, relaunch_under_mpiexec  # noqa: E402

relaunch_under_mpiexec(nprocs_arg())

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402

try:
    import torch
    import torch.distributed as tdist
except ImportError:  # the PyTorch comparison is skipped without it
    torch = None

WIDTH, DEPTH, BATCH = 1024, 8, 64
BUCKET_CAP_MB = 4  # several buckets for this 26 MiB model, so they can overlap backward


def make_model(lib):
    nn = lib.nn
    layers = [nn.Linear(256, WIDTH), nn.Tanh()]
    for _ in range(DEPTH - 2):
        layers += [nn.Linear(WIDTH, WIDTH), nn.Tanh()]
    layers += [nn.Linear(WIDTH, 10)]
    return nn.Sequential(*layers)


def timed_backward(make_loss, reps=5):
    """Best time of loss.backward() alone (the forward is built outside the timer)."""
    best = float("inf")
    for _ in range(reps):
        loss = make_loss()
        t0 = time.perf_counter()
        loss.backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    dist.init_process_group("mpi")
    comm = dist.group.default_comm()
    rank, size = comm.rank, comm.size
    rng = np.random.default_rng(rank)
    xs = rng.standard_normal((BATCH, 256)).astype(np.float32)
    ys = rng.integers(0, 10, BATCH)
    dg.manual_seed(0)
    model = make_model(dg)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=BUCKET_CAP_MB)
    x, y = dg.tensor(xs), dg.tensor(ys)
    loss_fn = lambda: dg.nn.functional.cross_entropy(ddp(x), y)  # noqa: E731
    loss_fn().backward()  # first step: buckets rebuilt in gradient-ready order
    reducer = ddp.reducer

    # A loss whose backward does almost no work but gives every parameter a gradient.
    idle_loss = lambda: sum((p * 0.0).sum() for p in model.parameters())  # noqa: E731
    results = {"backward alone": [], "raw all-reduce": [], "communication alone": [],
               "backward with DDP": []}
    for _ in range(5):
        comm.barrier()
        with ddp.no_sync():
            results["backward alone"].append(timed_backward(loss_fn, 1))
        comm.barrier()
        t0 = time.perf_counter()
        allreduce_buckets(reducer)
        results["raw all-reduce"].append(time.perf_counter() - t0)
        comm.barrier()
        with ddp.no_sync():
            idle = timed_backward(idle_loss, 1)
        comm.barrier()
        results["communication alone"].append(timed_backward(idle_loss, 1) - idle)
        comm.barrier()
        results["backward with DDP"].append(timed_backward(loss_fn, 1))
    early, total = reducer.overlap_report()  # of the last backward with DDP
    early = comm.comm.allreduce(early, op=comm.MPI.MIN)
    t = {k: comm.comm.allreduce(min(v), op=comm.MPI.MAX) for k, v in results.items()}
    hidden = (t["backward alone"] + t["communication alone"] - t["backward with DDP"]) / t["communication alone"]

    step = {}
    dg_step = lambda: loss_fn().backward()  # noqa: E731
    contenders = {"distgrad DDP": dg_step}
    if torch is not None:
        torch.set_num_threads(1)
        port = comm.broadcast_object(29500 + int(time.time()) % 1000 if rank == 0 else None, 0)
        tdist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size)
        tmodel = make_model(torch)
        tmodel.load_state_dict({k: torch.tensor(v.numpy()) for k, v in model.state_dict().items()})
        tddp = torch.nn.parallel.DistributedDataParallel(tmodel, bucket_cap_mb=BUCKET_CAP_MB)
        tx, ty = torch.tensor(xs), torch.tensor(ys)
        contenders["torch DDP (gloo)"] = lambda: torch.nn.functional.cross_entropy(tddp(tx), ty).backward()
    for name in contenders:
        step[name] = float("inf")
    for _ in range(5):
        for name, fn in contenders.items():
            comm.barrier()
            t0 = time.perf_counter()
            fn()
            step[name] = min(step[name], comm.comm.allreduce(time.perf_counter() - t0, op=comm.MPI.MAX))

    if rank == 0:
        nparam = sum(p.numel() for p in model.parameters())
        print(f"MLP {DEPTH} layers of width {WIDTH}, batch {BATCH} per rank, {nparam / 1e6:.1f} M parameters, "
              f"{len(reducer.buckets)} buckets of <= {BUCKET_CAP_MB} MiB; {size} ranks on {os.cpu_count()} cores "
              f"({platform.machine()}), one BLAS thread per rank")
        for k, v in t.items():
            print(f"  {k:<20} {v * 1e3:8.2f} ms")
        print(f"  communication hidden behind backward: {hidden:.0%} (goal >= 70% where the cores allow it)")
        print(f"  buckets all-reduced while backward was still running: {early / 2 ** 20:.1f} of "
              f"{total / 2 ** 20:.1f} MiB")
        for name, v in step.items():
            print(f"  step (forward + backward), {name:<17} {v * 1e3:8.2f} ms")
        if torch is not None:
            print(f"  distgrad DDP / torch DDP: {step['distgrad DDP'] / step['torch DDP (gloo)']:.2f} x (goal <= 1.0)")
    if torch is not None:
        tdist.destroy_process_group()


if __name__ == "__main__":
    main()
