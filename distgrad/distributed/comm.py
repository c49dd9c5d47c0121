"""Communicators: collectives behind one small interface.

- ``MPICommunicator``: mpi4py on host (numpy) arrays. GPU arrays are staged
  through pinned host buffers, with the stream synchronized before MPI reads them,
  since the MPI libraries in common use are not CUDA-aware.
- ``NCCLCommunicator``: NCCL through CuPy for GPU arrays when every rank owns its
  own GPU; bootstrapped by broadcasting NCCL's unique id over MPI. Host arrays
  still go through MPI.
- ``SingleProcessCommunicator``: world size 1, no MPI needed.
"""
from __future__ import annotations

import numpy as np

from ..backend import array_module

SUM, PRODUCT, MIN, MAX, AVG = "sum", "product", "min", "max", "avg"


class Communicator:
    """The collectives distgrad needs. Arrays are reduced in place."""

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1
    name = "base"

    def allreduce_(self, arr, op: str = SUM) -> None:
        raise NotImplementedError

    def broadcast_(self, arr, root: int = 0) -> None:
        raise NotImplementedError

    def iallreduce_(self, arr, op: str = SUM) -> "Request":
        """Start an in-place all-reduce; ``test()`` on the result drives it and says
        whether it has finished."""
        self.allreduce_(arr, op)
        return Request()

    def ibroadcast_(self, arr, root: int = 0) -> "Request":
        self.broadcast_(arr, root)
        return Request()

    def iallgather(self, arr) -> "Request":
        """Start gathering every rank's ``arr``; the request's ``result`` is the list."""
        return Request(result=self.allgather(arr))

    def ibarrier(self) -> "Request":
        self.barrier()
        return Request()

    def allgather(self, arr) -> list:
        raise NotImplementedError

    def reduce_scatter(self, arr, op: str = SUM):
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        raise NotImplementedError

    def broadcast_object(self, obj, root: int = 0):
        raise NotImplementedError

    def dup(self) -> "Communicator":
        """A communicator over the same ranks whose collectives never mix with this one's
        (the reducer's communication thread uses one)."""
        raise NotImplementedError

    def abort(self, code: int = 1) -> None:
        raise SystemExit(code)


class Request:
    """A collective in flight. ``test()`` makes progress and returns True once done;
    ``result`` holds what it produced (if anything) once it is done."""

    def __init__(self, mpi_request=None, finish=None, result=None):
        self._req = mpi_request
        self._finish = finish
        self.result = result

    def test(self) -> bool:
        if self._req is not None and not self._req.Test():
            return False
        self._done()
        return True

    def wait(self) -> None:
        if self._req is not None:
            self._req.Wait()
        self._done()

    def _done(self):
        if self._finish is not None:
            self._finish()
            self._finish = None


class SingleProcessCommunicator(Communicator):
    name = "single"

    def allreduce_(self, arr, op=SUM):
        return None

    def broadcast_(self, arr, root=0):
        if root != 0:
            raise ValueError(f"broadcast: root {root} does not exist in a world of size 1")

    def allgather(self, arr):
        return [arr.copy()]

    def reduce_scatter(self, arr, op=SUM):
        return arr.copy()

    def barrier(self):
        return None

    def allgather_object(self, obj):
        return [obj]

    def broadcast_object(self, obj, root=0):
        return obj

    def dup(self):
        return self


def _mpi_op(MPI, op):
    return {SUM: MPI.SUM, AVG: MPI.SUM, PRODUCT: MPI.PROD, MIN: MPI.MIN, MAX: MPI.MAX}[op]


class _Staging:
    """Pinned host buffers, reused, for moving GPU arrays through MPI."""

    def __init__(self):
        self._buffers = {}

    def host(self, arr):
        import cupy

        key = (arr.dtype.str, arr.size)
        buf = self._buffers.get(key)
        if buf is None:
            mem = cupy.cuda.alloc_pinned_memory(arr.nbytes)
            buf = np.frombuffer(mem, arr.dtype, arr.size)
            self._buffers[key] = buf
        return buf


class MPICommunicator(Communicator):
    name = "mpi"

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = local.Get_rank()
        self.local_size = local.Get_size()
        local.Free()
        self._staging = _Staging()

    def _on_host(self, arr):
        return isinstance(arr, np.ndarray)

    def _stage_out(self, arr):
        """A host copy of a GPU array, taken after the array's stream has finished."""
        import cupy

        host = self._staging.host(arr)
        with cupy.cuda.Device(arr.device.id):  # the current device is per thread
            cupy.cuda.get_current_stream().synchronize()
            arr.ravel().get(out=host)
        return host

    @staticmethod
    def _stage_in(arr, host):
        import cupy

        with cupy.cuda.Device(arr.device.id):
            arr.ravel().set(host)

    def allreduce_(self, arr, op=SUM):
        if self.size == 1:
            return None
        mop = _mpi_op(self.MPI, op)
        if self._on_host(arr):
            if not arr.flags.c_contiguous:
                raise ValueError("allreduce_: the array must be contiguous")
            self.comm.Allreduce(self.MPI.IN_PLACE, arr, op=mop)
            if op == AVG:
                arr /= self.size
            return None
        host = self._stage_out(arr)
        self.comm.Allreduce(self.MPI.IN_PLACE, host, op=mop)
        if op == AVG:
            host /= self.size
        self._stage_in(arr, host)
        return None

    def iallreduce_(self, arr, op=SUM):
        if self.size == 1:
            return Request()
        mop = _mpi_op(self.MPI, op)
        host = arr if self._on_host(arr) else self._stage_out(arr)
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=mop)

        def finish():
            if op == AVG:
                np.true_divide(host, self.size, out=host)
            if host is not arr:
                self._stage_in(arr, host)

        return Request(req, finish)

    def broadcast_(self, arr, root=0):
        if self.size == 1:
            return None
        if self._on_host(arr):
            self.comm.Bcast(arr, root=root)
            return None
        host = self._stage_out(arr)
        self.comm.Bcast(host, root=root)
        self._stage_in(arr, host)
        return None

    def ibroadcast_(self, arr, root=0):
        if self.size == 1:
            return Request()
        host = arr if self._on_host(arr) else self._stage_out(arr)
        req = self.comm.Ibcast(host, root=root)
        return Request(req, None if host is arr else (lambda: self._stage_in(arr, host)))

    def iallgather(self, arr):
        host = np.ascontiguousarray(arr if self._on_host(arr) else self._stage_out(arr).copy())
        out = np.empty((self.size,) + host.shape, host.dtype)
        req = self.comm.Iallgather(host, out)
        xp = array_module(arr)
        request = Request(req)
        request._finish = lambda: setattr(request, "result", [xp.asarray(o) for o in out])
        return request

    def ibarrier(self):
        return Request(self.comm.Ibarrier())

    def allgather(self, arr):
        host = arr if self._on_host(arr) else self._stage_out(arr).copy()
        out = np.empty((self.size,) + host.shape, host.dtype)
        self.comm.Allgather(np.ascontiguousarray(host), out)
        xp = array_module(arr)
        return [xp.asarray(o) for o in out]

    def reduce_scatter(self, arr, op=SUM):
        host = arr if self._on_host(arr) else self._stage_out(arr).copy()
        if host.shape[0] % self.size:
            raise ValueError(
                f"reduce_scatter: the first dim ({host.shape[0]}) must divide evenly among {self.size} ranks"
            )
        out = np.empty((host.shape[0] // self.size,) + host.shape[1:], host.dtype)
        self.comm.Reduce_scatter_block(np.ascontiguousarray(host), out, op=_mpi_op(self.MPI, op))
        if op == AVG:
            out /= self.size
        return array_module(arr).asarray(out)

    def barrier(self):
        self.comm.Barrier()

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def broadcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def dup(self):
        return MPICommunicator(self.comm.Dup())

    def abort(self, code=1):
        self.comm.Abort(code)


class NCCLCommunicator(MPICommunicator):
    """NCCL (through CuPy) for GPU arrays; MPI for host arrays and objects."""

    name = "nccl"

    def __init__(self, comm=None):
        super().__init__(comm)
        import cupy
        from cupy.cuda import nccl

        self.nccl = nccl
        if cupy.cuda.runtime.getDeviceCount() < self.local_size:
            raise RuntimeError(
                f"NCCL needs one GPU per rank: {self.local_size} ranks on this node but only "
                f"{cupy.cuda.runtime.getDeviceCount()} GPUs; use backend='mpi' (staged through host memory)"
            )
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.comm.bcast(uid, root=0)
        self.nccl_comm = nccl.NcclCommunicator(self.size, uid, self.rank)
        self._dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                        np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int64): nccl.NCCL_INT64,
                        np.dtype(np.int32): nccl.NCCL_INT32}
        self._ops = {SUM: nccl.NCCL_SUM, AVG: nccl.NCCL_SUM, PRODUCT: nccl.NCCL_PROD,
                     MIN: nccl.NCCL_MIN, MAX: nccl.NCCL_MAX}

    def allreduce_(self, arr, op=SUM):
        if self._on_host(arr):
            return super().allreduce_(arr, op)
        import cupy

        stream = cupy.cuda.get_current_stream()
        self.nccl_comm.allReduce(arr.data.ptr, arr.data.ptr, arr.size, self._dtypes[arr.dtype],
                                 self._ops[op], stream.ptr)
        if op == AVG:
            arr /= self.size
        return None

    def broadcast_(self, arr, root=0):
        if self._on_host(arr):
            return super().broadcast_(arr, root)
        import cupy

        stream = cupy.cuda.get_current_stream()
        self.nccl_comm.bcast(arr.data.ptr, arr.size, self._dtypes[arr.dtype], root, stream.ptr)
        return None

    def dup(self):
        return NCCLCommunicator(self.comm.Dup())
