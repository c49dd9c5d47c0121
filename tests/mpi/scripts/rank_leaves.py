"""One rank's script ends early (it returns after the first step) while the other goes
on to a second DDP step, with the default collective timeout (10 minutes).

    mpiexec -n 2 python tests/mpi/scripts/rank_leaves.py

The leaving rank tells the others as its process ends, so the waiting rank must fail
within seconds, naming it, instead of waiting out the timeout.
"""
import os
import sys

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import numpy as np  # noqa: E402

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import nn  # noqa: E402


def main():
    dist.init_process_group("mpi")
    rank = dist.get_rank()
    dg.manual_seed(0)
    ddp = dist.DistributedDataParallel(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)))
    x = dg.tensor(np.random.default_rng(rank).standard_normal((8, 4)), dtype=dg.float32)
    ddp(x).pow(2).mean().backward()  # step 0 completes on every rank
    if rank == 1:
        print("rank 1: leaving after one step", flush=True)
        return
    ddp(x).pow(2).mean().backward()  # rank 1 never joins this one
    print("rank 0: the second step finished", flush=True)


if __name__ == "__main__":
    main()
