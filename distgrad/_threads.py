"""What a rank started by ``distgrad-launch`` sets up before numpy is first
imported (the launcher marks its ranks with ``DISTGRAD_LAUNCHED=1``; importing
distgrad anywhere else changes nothing):

- Thread pools sized on each node: a rank's BLAS/OpenMP threads are its node's
  cores divided among the ranks on that node (BLAS reads its thread count when it
  loads). A thread variable set by the user (``OMP_NUM_THREADS`` etc., forwarded by
  the launcher) is kept; ``DISTGRAD_THREADS=N`` asks for N threads per rank.
- ``distgrad.set_num_threads(n)`` / ``get_num_threads()`` change and report the
  threads the BLAS library behind numpy (and any other BLAS loaded in the process)
  really uses, through ``threadpoolctl``, at any time, not only at start.
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


# ----------------------------------------------------------- torch.set_num_threads & co.
def _check_count(n, fn: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int):
        raise RuntimeError(f"{fn} expects an int, but got {type(n).__name__}")
    if n <= 0:
        raise RuntimeError(f"{fn} expects a positive integer")
    return n


def _blas_pools():
    """threadpoolctl's view of the BLAS libraries loaded now (numpy's among them),
    looked up afresh each call, since a library may load later."""
    import numpy  # noqa: F401  (numpy loads its BLAS on import)
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


_requested: int | None = None
_interop: int | None = None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in BLAS (matmul, conv, linalg): set at once in every BLAS
    library loaded in this process, as ``torch.set_num_threads``."""
    global _requested
    _requested = _check_count(n, "set_num_threads")
    _blas_pools().limit(limits=n)


def get_num_threads() -> int:
    """The threads BLAS uses now, read from the library itself (the most of any
    BLAS loaded; without one, the last ``set_num_threads`` or the available cores)."""
    counts = [p.num_threads for p in _blas_pools().lib_controllers]
    if counts:
        return max(counts)
    return _requested or available_cores()


def set_num_interop_threads(n: int) -> None:
    """Record the inter-op thread count. distgrad runs ops one at a time on the
    calling thread (no inter-op pool), so this changes nothing but what
    ``get_num_interop_threads`` returns; it is accepted for compatibility."""
    global _interop
    _interop = _check_count(n, "set_num_interop_threads")


def get_num_interop_threads() -> int:
    """The value set by ``set_num_interop_threads``, by default the cores this
    process may use (PyTorch's default)."""
    return _interop or available_cores()
