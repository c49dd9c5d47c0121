"""Bucketed all-reduce throughput against one raw mpi4py Allreduce of a flat buffer
of the same total size.

The buckets are those DistributedDataParallel builds for a GPT-like parameter
list (25 MiB cap, 1 MiB first bucket), reduced by the reducer's communication
thread in bucket order. Run it directly (it starts ``mpiexec -n 2`` itself) or
under ``mpiexec -n N python bench/allreduce.py``.
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
from distgrad.distributed.reducer import Reducer  # noqa: E402


def gpt_like_params(width=768, layers=6, vocab=8192):
    shapes = [(vocab, width), (1024, width)]
    for _ in range(layers):
        shapes += [(width,), (width,), (3 * width, width), (3 * width,), (width, width), (width,),
                   (width,), (width,), (4 * width, width), (4 * width,), (width, 4 * width), (width,)]
    shapes += [(width,), (width,)]
    return [dg.nn.Parameter(dg.randn(*s)) for s in shapes]


def main():
    dist.init_process_group("mpi")
    comm = dist.group.default_comm()
    rank, size = comm.rank, comm.size
    params = gpt_like_params()
    reducer = Reducer(params, [f"p{i}" for i in range(len(params))], comm, 25 * 2 ** 20, 2 ** 20, False, None)
    total = sum(b.buffer.size for b in reducer.buckets)
    flat = np.ones(total, np.float32)
    mpi = comm.comm

    def raw():
        mpi.Allreduce(comm.MPI.IN_PLACE, flat)

    def bucketed():
        allreduce_buckets(reducer)

    best = {"raw": float("inf"), "bucketed": float("inf")}
    for _ in range(2):
        raw(), bucketed()
    for _ in range(7):
        for name, fn in (("raw", raw), ("bucketed", bucketed)):
            comm.barrier()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            dt = comm.comm.allreduce(dt, op=comm.MPI.MAX)
            best[name] = min(best[name], dt)
    if rank == 0:
        mb = total * 4 / 2 ** 20
        print(f"all-reduce of {mb:.1f} MiB float32 over {size} ranks ({len(reducer.buckets)} buckets); "
              f"{platform.machine()}, {os.cpu_count()} cores")
        for name in ("raw", "bucketed"):
            print(f"  {name:<9} {best[name] * 1e3:8.2f} ms   {mb / best[name] / 1024:6.2f} GiB/s")
        print(f"  bucketed / raw throughput: {best['raw'] / best['bucketed']:.2f} x (goal >= 0.9)")
    reducer.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
