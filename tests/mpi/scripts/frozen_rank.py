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
    try:
        dist.DistributedDataParallel(model)
        report = "nothing"
    except RuntimeError as e:
        report = str(e)
    # One write per line, so the ranks' lines do not interleave in mpiexec's output.
    os.write(1, f"rank {rank} caught: {report}\n".encode())
    # The model check is the only collective so far and every rank finished it, so
    # the ranks can leave together: a rank ending without MPI_Finalize while another
    # is still writing makes mpiexec drop that rank's output.
    dist.barrier()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
