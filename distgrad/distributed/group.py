"""The process group: initialization, rank and size, and the collectives on tensors
(PyTorch's ``torch.distributed`` names)."""
from __future__ import annotations

import contextlib
import datetime
import os
import threading
import time

from ..tensor import Tensor
from . import comm as _comm
from . import failure, monitor

# PyTorch's default: a collective that waits longer than this fails instead of hanging.
DEFAULT_TIMEOUT = 600.0
# Ranks that wait longer than this in one collective get a stall report on stderr.
DEFAULT_STALL_REPORT = 60.0


class ReduceOp:
    SUM = _comm.SUM
    PRODUCT = _comm.PRODUCT
    MIN = _comm.MIN
    MAX = _comm.MAX
    AVG = _comm.AVG


class _World:
    comm: _comm.Communicator | None = None
    backend: str | None = None
    timeout: float = DEFAULT_TIMEOUT
    seq: int = 0        # collectives issued through this module, the same count on every rank


_world = _World()

_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")


def _launched_size() -> int:
    for var in _LAUNCHER_SIZE_VARS[:2]:
        if var in os.environ:
            return int(os.environ[var])
    return 1


def _make_comm(backend: str) -> _comm.Communicator:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        if _launched_size() > 1:
            raise RuntimeError(
                "init_process_group: this process was started by an MPI launcher with "
                f"{_launched_size()} ranks, but mpi4py is not installed: pip install -e \".[mpi]\" "
                "(or build mpi4py against your cluster's MPI)"
            ) from None
        if backend == "nccl":
            raise RuntimeError("init_process_group: backend 'nccl' needs mpi4py for bootstrapping") from None
        return _comm.SingleProcessCommunicator()
    # GPU arrays: "mpi" stages them through host memory; "nccl" uses NCCL (one GPU per
    # rank); "auto" decides at the first collective on a GPU array, with every rank, so
    # a CPU job never touches CUDA.
    return _comm.MPICommunicator(device={"mpi": "staged", "nccl": "nccl"}.get(backend, "auto"))


def init_process_group(backend: str | None = "auto", init_method=None, timeout=None,
                       world_size: int = -1, rank: int = -1, store=None, group_name: str = "",
                       device_id=None, stall_report=DEFAULT_STALL_REPORT) -> None:
    """Join the job: rank and world size come from MPI (world size 1 works without
    mpiexec). ``backend``: 'mpi', 'nccl' or 'auto'. ``timeout`` (seconds or a
    timedelta; default 10 minutes, as PyTorch's) bounds how long any collective may
    wait before it fails, naming the ranks that did not join it. A wait longer than
    ``stall_report`` seconds prints a report of where every rank is (0: never)."""
    if _world.comm is not None:
        raise RuntimeError("trying to initialize the default process group twice!")
    backend = (backend or "auto").lower()
    if backend == "gloo":
        backend = "mpi"
    if backend not in ("mpi", "nccl", "auto"):
        raise ValueError(f"init_process_group: unknown backend {backend!r}; use 'mpi', 'nccl' or 'auto'")
    c = _make_comm(backend)
    if backend == "nccl" and isinstance(c, _comm.MPICommunicator):
        c.resolve_device()   # one GPU per rank, or a clear error now (NCCL itself starts lazily)
    if world_size not in (-1, c.size):
        raise ValueError(f"init_process_group: world_size={world_size} but MPI started {c.size} ranks")
    if rank not in (-1, c.rank):
        raise ValueError(f"init_process_group: rank={rank} but MPI says this is rank {c.rank}")
    timeout = _seconds(timeout, "timeout", DEFAULT_TIMEOUT)
    stall_report = _seconds(stall_report, "stall_report", 0.0)
    _world.comm = c
    _world.backend = c.name
    _world.timeout = timeout
    _world.seq = 0
    failure.install(c)
    monitor.start(c, stall_report)


def _seconds(value, name: str, default: float) -> float:
    if value is None:
        return default
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    value = float(value)
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"init_process_group: {name} must be a finite number of seconds >= 0, got {value!r}")
    if name == "timeout" and value == 0:
        raise ValueError("init_process_group: timeout must be positive: every wait needs a bound")
    return value


def destroy_process_group(group=None) -> None:
    monitor.leave("finished", together=True)
    _world.comm = None
    _world.backend = None
    _world.timeout = DEFAULT_TIMEOUT
    failure.uninstall()


def is_initialized() -> bool:
    return _world.comm is not None


def is_available() -> bool:
    return True


_local = threading.local()   # .comm: this thread's communicator while a DDP comm hook runs


@contextlib.contextmanager
def collectives_on(comm):
    """Inside, this thread's collectives use ``comm`` and wait for themselves (the
    reducer's communication thread runs comm hooks so: their all-reduces never mix
    with the main thread's collectives, and the main thread's wait for the bucket is
    what reports a stall)."""
    old = getattr(_local, "comm", None)
    _local.comm = comm
    try:
        yield
    finally:
        _local.comm = old


def _hook_comm():
    return getattr(_local, "comm", None)


def _require() -> _comm.Communicator:
    c = _hook_comm()
    if c is not None:
        return c
    if _world.comm is None:
        raise RuntimeError(
            "Default process group has not been initialized, please make sure to call "
            "init_process_group."
        )
    return _world.comm


def get_rank(group=None) -> int:
    return _require().rank


def get_world_size(group=None) -> int:
    return _require().size


def get_local_rank() -> int:
    """This rank's index among the ranks on its node."""
    return _require().local_rank


def get_local_world_size() -> int:
    return _require().local_size


def get_backend(group=None) -> str:
    """'mpi', 'nccl' (GPU arrays through NCCL, once decided) or 'single'."""
    return _require().name


def default_comm() -> _comm.Communicator:
    return _require()


def collective_timeout() -> float:
    return _world.timeout


def _next_key(what: str):
    _world.seq += 1
    return ("collective", _world.seq), f"{what} (collective #{_world.seq})"


def wait_for(request, what: str):
    """Drive a started collective (a ``Request``) to its end within the job's timeout;
    returns its ``result``."""
    c = _require()
    if _hook_comm() is not None:
        _poll(request, what)
    elif c.size > 1:
        key, text = _next_key(what)
        monitor.wait(request.test, text, key, _world.timeout)
    request.wait()
    return request.result


def _poll(request, what: str) -> None:
    """Drive ``request`` to its end within the job's timeout, without the monitor."""
    deadline = time.monotonic() + _world.timeout
    pause = 20e-6
    while not request.test():
        if time.monotonic() > deadline:
            raise monitor.CollectiveTimeout(
                f"{monitor.whoami()}: {what} in a DDP communication hook did not finish within "
                f"{_world.timeout:.0f} s")
        time.sleep(pause)
        pause = min(pause * 2, 1e-3)


def run_with_timeout(fn, what: str):
    """Run a blocking collective in a helper thread and wait for it within the job's
    timeout, so a rank that never joins makes it fail (naming the missing ranks)
    instead of hanging. For collectives with no non-blocking form (objects)."""
    c = _require()
    if c.size == 1 or _hook_comm() is not None:
        return fn()
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as e:  # handed to the waiting thread
            box["error"] = e

    t = threading.Thread(target=target, name=f"distgrad-{what}", daemon=True)
    t.start()
    key, text = _next_key(what)
    monitor.wait(lambda: not t.is_alive(), text, key, _world.timeout)
    if "error" in box:
        raise box["error"]
    return box.get("result")


class Work:
    """A finished (or finishing) collective, as returned with ``async_op=True``."""

    def __init__(self, thread=None, result=None):
        self._thread = thread
        self._result = result

    def get_future(self):
        """A ``distgrad.futures.Future`` holding the collective's output tensors (for
        ``all_reduce``, ``[tensor]``), as PyTorch's ``Work.get_future``."""
        from ..futures import Future

        self.wait()
        fut = Future()
        fut.set_result(self._result if self._result is not None else [])
        return fut

    def result(self):
        self.wait()
        return self._result if self._result is not None else []

    def wait(self, timeout=None) -> bool:
        if self._thread is not None:
            self._thread.join()
        return True

    def is_completed(self) -> bool:
        return self._thread is None or not self._thread.is_alive()


def _check(tensor, op_name):
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{op_name}: expected a Tensor, got {type(tensor).__name__}")
    if not tensor._data.flags.c_contiguous:
        raise ValueError(f"{op_name}: tensors must be contiguous; call .contiguous() first")


def _on_host(tensor) -> bool:
    import numpy as np

    return isinstance(tensor._data, np.ndarray)


def _bump(tensor):
    tensor._vc[0] += 1


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``tensor`` across ranks in place (SUM by default)."""
    c = _require()
    _check(tensor, "all_reduce")
    if _on_host(tensor):
        wait_for(c.iallreduce_(tensor._data, op), "all_reduce")
    else:  # a device transport's own all-reduce (NCCL), not the staged one
        run_with_timeout(lambda: c.allreduce_(tensor._data, op), "all_reduce")
    _bump(tensor)
    return Work(result=[tensor]) if async_op else None


def broadcast(tensor, src=0, group=None, async_op=False):
    c = _require()
    _check(tensor, "broadcast")
    if not 0 <= src < c.size:
        raise ValueError(f"broadcast: src={src} is not a rank of this world of size {c.size}")
    if _on_host(tensor):
        wait_for(c.ibroadcast_(tensor._data, src), "broadcast")
    else:
        run_with_timeout(lambda: c.broadcast_(tensor._data, src), "broadcast")
    _bump(tensor)
    return Work(result=[tensor]) if async_op else None


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """Fill ``tensor_list`` (one tensor per rank) with every rank's ``tensor``."""
    c = _require()
    _check(tensor, "all_gather")
    if len(tensor_list) != c.size:
        raise ValueError(f"all_gather: tensor_list has {len(tensor_list)} entries for {c.size} ranks")
    parts = wait_for(c.iallgather(tensor._data), "all_gather")
    for dst, part in zip(tensor_list, parts):
        if tuple(dst.shape) != tuple(part.shape):
            raise ValueError(f"all_gather: output tensor of shape {list(dst.shape)} for input of shape {list(part.shape)}")
        dst._data[...] = part
        _bump(dst)
    return Work(result=[tensor_list]) if async_op else None


def all_gather_object(object_list, obj, group=None):
    c = _require()
    object_list[:] = run_with_timeout(lambda: c.allgather_object(obj), "all_gather_object")


def broadcast_object_list(object_list, src=0, group=None):
    c = _require()
    object_list[:] = run_with_timeout(lambda: c.broadcast_object(list(object_list), src), "broadcast_object_list")


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """Reduce ``input`` across ranks and give each rank its slice of the first dim."""
    c = _require()
    _check(input, "reduce_scatter_tensor")
    part = run_with_timeout(lambda: c.reduce_scatter(input._data, op), "reduce_scatter")
    if tuple(output.shape) != tuple(part.shape):
        raise ValueError(f"reduce_scatter_tensor: output must have shape {list(part.shape)}, got {list(output.shape)}")
    output._data[...] = part
    _bump(output)
    return Work(result=[output]) if async_op else None


def barrier(group=None, async_op=False, device_ids=None):
    c = _require()
    wait_for(c.ibarrier(), "barrier")
    return Work() if async_op else None
