"""Rank 1 builds the model with every parameter frozen (a model mismatch).

    mpiexec -n 2 python tests/mpi/scripts/frozen_rank.py

DESIGN.md: "Startup checks that every rank has the same parameters ...; a mismatch is
an error on every rank, not a hang." Each rank catches the RuntimeError from the
``DistributedDataParallel`` constructor and prints it as ``rank R caught: ...``; a
collective timeout (3 s) keeps a rank that waits for the others from hanging. Expected:
every rank reports that rank 1 does not hold the same model as rank 0.
"""
import os
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path.insert(0, REPO)  # run from a checkout without installing distgrad

import distgrad as dg  # noqa: E402
import distgrad.distributed as dist  # noqa: E402
from distgrad import nn  # noqa: E402


TIMEOUT = 3.0


def main():
    dist.init_process_group("mpi", timeout=TIMEOUT)
    rank = dist.get_rank()
    dg.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    if rank == 1:
        model.requires_grad_(False)
    deadline = time.monotonic() + TIMEOUT + 1.5
    try:
        dist.DistributedDataParallel(model)
        print(f"rank {rank} caught: nothing", flush=True)
    except RuntimeError as e:
        print(f"rank {rank} caught: {e}", flush=True)
    # Let a rank that waits for the others reach its timeout before anyone leaves (an
    # early exit can make mpiexec end the job before that rank has reported).
    time.sleep(max(0.0, deadline - time.monotonic()))
    sys.stdout.flush()
    sys.stderr.flush()
    # a rank may have left a collective unfinished: skip MPI_Finalize, which would wait for it
    os._exit(0)


if __name__ == "__main__":
    main()
