"""Helpers for benchmarks that run on several MPI ranks."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys


def relaunch_under_mpiexec(nprocs: int) -> None:
    """If this script was not started by mpiexec, start it again under ``mpiexec -n
    nprocs`` (with one BLAS thread per rank) and exit with its status."""
    if any(v in os.environ for v in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")):
        return
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if not os.path.exists(mpiexec):
        mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        sys.exit("mpiexec not found: pip install -e \".[mpi]\" (the mpich wheel provides it)")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [mpiexec, "-n", str(nprocs), sys.executable] + sys.argv
    sys.exit(subprocess.call(cmd, env=env))


def nprocs_arg(default: int = 2) -> int:
    for i, a in enumerate(sys.argv):
        if a == "--np" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
    return default


def allreduce_buckets(reducer) -> None:
    """All-reduce every bucket of a DDP reducer through its communication thread, as
    backward would, and wait for them (the communication alone, for comparison)."""
    for b in reducer.buckets:
        b.reset()
        reducer.worker.submit(b)
    for b in reducer.buckets:
        b.done.wait()
