"""What a rank started by ``distgrad-launch`` sets up before numpy is first
imported (the launcher marks its ranks with ``DISTGRAD_LAUNCHED=1``; importing
distgrad anywhere else changes nothing):

- Thread pools sized on each node: a rank's BLAS/OpenMP threads are its node's
  cores divided among the ranks on that node (BLAS reads its thread count when it
  loads). A thread variable set by the user (``OMP_NUM_THREADS`` etc., forwarded by
  the launcher) is kept; ``DISTGRAD_THREADS=N`` asks for N threads per rank.
- A Ctrl-C (which mpiexec passes to every rank) before the run has started ends
  the rank quietly with status 130, instead of a traceback from whatever module
  was loading; ``python -m distgrad.train`` puts Python's own handler back once it
  is ready to record an interruption.
"""
from __future__ import annotations

import os
import re
import signal

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, as a batch system sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def local_ranks(env=os.environ) -> int:
    """How many ranks of the job run on this node, from what the MPI launcher or
    Slurm tells each process (1 if nothing says)."""
    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "PMIX_LOCAL_SIZE"):
        if env.get(var, "").isdigit():
            return max(1, int(env[var]))
    tasks = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if tasks:
        # "2(x3),1": the tasks of each node of the step, in node order
        counts = []
        for item in tasks.split(","):
            m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", item.strip())
            if not m:
                return 1
            counts += [int(m.group(1))] * int(m.group(2) or 1)
        node = env.get("SLURM_NODEID", "0")
        if node.isdigit() and int(node) < len(counts):
            return max(1, counts[int(node)])
    return 1


def per_rank(cores: int, ranks_here: int) -> int:
    return max(1, cores // max(1, ranks_here))


def apply(env=os.environ) -> int | None:
    """Set the thread variables for this rank (those not set already) from
    ``DISTGRAD_THREADS`` ('auto' or a count); the count used (None without it)."""
    want = env.get("DISTGRAD_THREADS", "").strip()
    if not want:
        return None
    n = int(want) if want.isdigit() and int(want) > 0 else per_rank(available_cores(), local_ranks(env))
    for var in THREAD_VARS:
        env.setdefault(var, str(n))
    return n


def _quiet_interrupt(signum, frame):
    os._exit(128 + signum)


def prepare_rank() -> None:
    """A launched rank's set-up: its threads, and quiet interrupts until it runs."""
    apply()
    try:
        signal.signal(signal.SIGINT, _quiet_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        pass
