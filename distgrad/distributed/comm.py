"""Communicators: collectives behind one small interface, built from transports.

A transport moves one kind of array between ranks:

- ``MPITransport``: host (numpy) arrays through mpi4py.
- ``StagedTransport``: GPU arrays copied into pinned host buffers (after their
  stream has finished) and moved by an ``MPITransport``; the MPI libraries in common
  use are not CUDA-aware. It works however many ranks share a GPU.
- ``NCCLTransport``: GPU arrays through NCCL (CuPy's binding) on a stream of its
  own, ordered after the producer's work by an event; ``test()`` and ``wait()`` on
  its requests query and wait for an event recorded after the collective. Needs one
  GPU per rank; bootstrapped by broadcasting NCCL's unique id over MPI.

``MPICommunicator`` composes them: host arrays always go through MPI; GPU arrays go
through the device transport, chosen once (``device="staged"``, ``"nccl"``, or
``"auto"``: NCCL when every rank has a GPU of its own, decided by all ranks together)
and created lazily, at the first collective on a GPU array: after the rank has picked
its GPU, and never in a CPU-only job (which so never makes a CUDA context).
``NCCLCommunicator`` is the same with ``device="nccl"``.
``SingleProcessCommunicator``: world size 1, no MPI needed.
"""
from __future__ import annotations

import threading

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

    def iallreduce_(self, arr, op: str = SUM, ready=None) -> "Request":
        """Start an in-place all-reduce; ``test()`` on the result drives it and says
        whether it has finished. ``ready``: for a GPU array, an event after which the
        array holds its values (default: all work queued on the current stream)."""
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

    def ireduce_scatter(self, arr, op: str = SUM, ready=None, counts=None) -> "Request":
        """Start a reduce-scatter of ``arr``; the request's ``result`` is this rank's
        part once it is done. Without ``counts`` the parts are equal blocks of the
        first dim (which the world size must divide); with ``counts`` (one element
        count per rank, summing to ``arr.size``) rank r's part is the r-th segment of
        the flattened array, of ``counts[r]`` elements. ``ready`` as for ``iallreduce_``."""
        return Request(result=arr.reshape(-1).copy() if counts is not None else self.reduce_scatter(arr, op))

    def barrier(self) -> None:
        raise NotImplementedError

    def allgather_object(self, obj) -> list:
        raise NotImplementedError

    def gather_object(self, obj, root: int = 0):
        """Every rank's ``obj`` as a list on ``root``; None on the other ranks."""
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

    def gather_object(self, obj, root=0):
        return [obj]

    def broadcast_object(self, obj, root=0):
        return obj

    def dup(self):
        return self


def _mpi_op(MPI, op):
    return {SUM: MPI.SUM, AVG: MPI.SUM, PRODUCT: MPI.PROD, MIN: MPI.MIN, MAX: MPI.MAX}[op]


_HALF_OPS: dict = {}


def _is_half(dtype) -> bool:
    """float16 or bfloat16: 2-byte floats that not every MPI library can reduce."""
    return dtype.itemsize == 2 and (dtype.kind == "f" or dtype.name == "bfloat16")


def _half_buffer(MPI, arr, op):
    """(buffer spec, MPI op) reducing a float16/bfloat16 array with numpy's arithmetic
    in an op of our own, as 16-bit words (portable across MPI libraries)."""
    key = (arr.dtype.str, arr.dtype.name, op)
    mop = _HALF_OPS.get(key)
    if mop is None:
        dtype = arr.dtype
        ufunc = {SUM: np.add, AVG: np.add, PRODUCT: np.multiply, MIN: np.minimum, MAX: np.maximum}[op]

        def reduce(inbuf, inoutbuf, datatype):
            acc = np.frombuffer(inoutbuf, dtype)
            ufunc(np.frombuffer(inbuf, dtype), acc, out=acc)

        mop = _HALF_OPS[key] = MPI.Op.Create(reduce, commute=True)
    return [arr.view(np.uint16), MPI.UINT16_T], mop


# ------------------------------------------------------------------ transports
class Transport:
    """Collectives on one kind of array (host or GPU), in place where they reduce."""

    name = "base"

    def allreduce_(self, arr, op=SUM):
        self.iallreduce_(arr, op).wait()

    def iallreduce_(self, arr, op=SUM, ready=None) -> Request:
        raise NotImplementedError

    def broadcast_(self, arr, root=0):
        self.ibroadcast_(arr, root).wait()

    def ibroadcast_(self, arr, root=0) -> Request:
        raise NotImplementedError

    def iallgather(self, arr) -> Request:
        raise NotImplementedError

    def allgather(self, arr) -> list:
        req = self.iallgather(arr)
        req.wait()
        return req.result

    def reduce_scatter(self, arr, op=SUM):
        req = self.ireduce_scatter(arr, op)
        req.wait()
        return req.result

    def ireduce_scatter(self, arr, op=SUM, ready=None, counts=None):
        raise NotImplementedError


def _check_counts(counts, arr, size) -> list:
    counts = [int(c) for c in counts]
    if len(counts) != size or min(counts) < 0 or sum(counts) != arr.size:
        raise ValueError(f"reduce_scatter: counts {counts} must give each of the {size} ranks a part, "
                         f"summing to the array's {arr.size} elements")
    return counts


class MPITransport(Transport):
    """Host arrays through mpi4py."""

    name = "mpi"

    def __init__(self, comm, MPI):
        self.comm, self.MPI = comm, MPI
        self.size = comm.Get_size()

    def _spec(self, arr, op):
        if not arr.flags.c_contiguous:
            raise ValueError("all-reduce: the array must be contiguous")
        if _is_half(arr.dtype):
            return _half_buffer(self.MPI, arr, op)
        return arr, _mpi_op(self.MPI, op)

    def allreduce_(self, arr, op=SUM):
        buf, mop = self._spec(arr, op)
        self.comm.Allreduce(self.MPI.IN_PLACE, buf, op=mop)
        if op == AVG:
            arr /= self.size

    def iallreduce_(self, arr, op=SUM, ready=None):
        buf, mop = self._spec(arr, op)
        req = self.comm.Iallreduce(self.MPI.IN_PLACE, buf, op=mop)
        return Request(req, (lambda: np.true_divide(arr, self.size, out=arr)) if op == AVG else None)

    def broadcast_(self, arr, root=0):
        self.comm.Bcast(arr, root=root)

    def ibroadcast_(self, arr, root=0):
        return Request(self.comm.Ibcast(arr, root=root))

    def iallgather(self, arr):
        host = np.ascontiguousarray(arr)
        out = np.empty((self.size,) + host.shape, host.dtype)
        request = Request(self.comm.Iallgather(host, out))
        request._finish = lambda: setattr(request, "result", list(out))
        return request

    def allgather(self, arr):
        host = np.ascontiguousarray(arr)
        out = np.empty((self.size,) + host.shape, host.dtype)
        self.comm.Allgather(host, out)
        return list(out)

    def _scatter_spec(self, arr, op, counts=None):
        src = np.ascontiguousarray(arr)
        if counts is not None:
            out = np.empty(counts[self.comm.Get_rank()], arr.dtype)
        elif arr.ndim == 0 or arr.shape[0] % self.size:
            raise ValueError(
                f"reduce_scatter: the first dim ({arr.shape[0] if arr.ndim else 'none'}) must divide evenly "
                f"among {self.size} ranks")
        else:
            out = np.empty((arr.shape[0] // self.size,) + arr.shape[1:], arr.dtype)
        if _is_half(arr.dtype):
            sbuf, mop = _half_buffer(self.MPI, src, op)
            return sbuf, [out.view(np.uint16), self.MPI.UINT16_T], mop, out
        return src, out, _mpi_op(self.MPI, op), out

    def ireduce_scatter(self, arr, op=SUM, ready=None, counts=None):
        if counts is not None:
            counts = _check_counts(counts, arr, self.size)
        sbuf, rbuf, mop, out = self._scatter_spec(arr, op, counts)
        if counts is None:
            req = self.comm.Ireduce_scatter_block(sbuf, rbuf, op=mop)
        else:
            req = self.comm.Ireduce_scatter(sbuf, rbuf, counts, op=mop)
        request = Request(req, result=out)
        if op == AVG:
            request._finish = lambda: np.true_divide(out, self.size, out=out)
        return request


class _Staging:
    """Pinned host buffers, reused, for moving GPU arrays through MPI (one set per
    thread: the reducer's communication thread and the main thread never share one)."""

    def __init__(self):
        self._local = threading.local()

    def host(self, arr):
        import cupy

        buffers = self._local.__dict__.setdefault("buffers", {})
        key = (arr.dtype.str, arr.size)
        buf = buffers.get(key)
        if buf is None:
            mem = cupy.cuda.alloc_pinned_memory(arr.nbytes)
            buf = np.frombuffer(mem, arr.dtype, arr.size)
            buffers[key] = buf
        return buf


class StagedTransport(Transport):
    """GPU arrays through pinned host memory and MPI."""

    name = "staged"

    def __init__(self, host: MPITransport):
        self.host = host
        self._staging = _Staging()

    def _out(self, arr, ready=None, copy=False):
        """A host copy of ``arr``, taken once its values are final."""
        import cupy

        host = self._staging.host(arr)
        with cupy.cuda.Device(arr.device.id):  # the current device is per thread
            if ready is not None:
                ready.synchronize()
            else:
                cupy.cuda.get_current_stream().synchronize()
            arr.ravel().get(out=host)
        return host.copy() if copy else host

    @staticmethod
    def _in(arr, host):
        import cupy

        with cupy.cuda.Device(arr.device.id):
            arr.ravel().set(host)

    def allreduce_(self, arr, op=SUM):
        host = self._out(arr)
        self.host.allreduce_(host, op)
        self._in(arr, host)

    def iallreduce_(self, arr, op=SUM, ready=None):
        host = self._out(arr, ready)
        inner = self.host.iallreduce_(host, op)
        return Request(inner._req, lambda: (inner._done(), self._in(arr, host)))

    def broadcast_(self, arr, root=0):
        host = self._out(arr)
        self.host.broadcast_(host, root)
        self._in(arr, host)

    def ibroadcast_(self, arr, root=0):
        host = self._out(arr)
        return Request(self.host.ibroadcast_(host, root)._req, lambda: self._in(arr, host))

    def iallgather(self, arr):
        inner = self.host.iallgather(self._out(arr, copy=True).reshape(arr.shape))
        xp = array_module(arr)
        request = Request(inner._req)

        def finish():
            inner._done()
            request.result = [xp.asarray(o) for o in inner.result]

        request._finish = finish
        return request

    def allgather(self, arr):
        xp = array_module(arr)
        return [xp.asarray(o) for o in self.host.allgather(self._out(arr, copy=True).reshape(arr.shape))]

    def ireduce_scatter(self, arr, op=SUM, ready=None, counts=None):
        import cupy

        inner = self.host.ireduce_scatter(self._out(arr, ready, copy=True).reshape(arr.shape), op, counts=counts)
        request = Request(inner._req)

        def finish():
            inner._done()
            with cupy.cuda.Device(arr.device.id):
                request.result = cupy.asarray(inner.result)

        request._finish = finish
        return request


class NCCLTransport(Transport):
    """GPU arrays through NCCL, on a stream of its own per device."""

    name = "nccl"

    def __init__(self, mpi_comm, rank: int, size: int):
        import cupy
        from cupy.cuda import nccl

        self.cupy, self.nccl = cupy, nccl
        self.rank, self.size = rank, size
        uid = nccl.get_unique_id() if rank == 0 else None
        uid = mpi_comm.bcast(uid, root=0)
        self.device = cupy.cuda.Device().id   # the rank's GPU, chosen before this first use
        self.nccl_comm = nccl.NcclCommunicator(size, uid, rank)
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._dtypes = {np.dtype(np.float32): nccl.NCCL_FLOAT32, np.dtype(np.float64): nccl.NCCL_FLOAT64,
                        np.dtype(np.float16): nccl.NCCL_FLOAT16, np.dtype(np.int64): nccl.NCCL_INT64,
                        np.dtype(np.int32): nccl.NCCL_INT32, np.dtype(np.uint8): nccl.NCCL_UINT8,
                        np.dtype(np.int8): nccl.NCCL_INT8}
        bf16 = getattr(nccl, "NCCL_BFLOAT16", None)
        if bf16 is not None:
            try:
                import ml_dtypes

                self._dtypes[np.dtype(ml_dtypes.bfloat16)] = bf16
            except ImportError:
                pass
        self._ops = {SUM: nccl.NCCL_SUM, AVG: nccl.NCCL_SUM, PRODUCT: nccl.NCCL_PROD,
                     MIN: nccl.NCCL_MIN, MAX: nccl.NCCL_MAX}

    def _dtype(self, arr):
        try:
            return self._dtypes[arr.dtype]
        except KeyError:
            raise TypeError(f"NCCL cannot reduce arrays of dtype {arr.dtype}") from None

    def _launch(self, arr, ready, call):
        """Run ``call(stream_ptr)`` on the transport's stream after ``ready`` (or after
        everything queued so far on the caller's stream); returns a request whose
        ``test``/``wait`` follow an event recorded after it."""
        cupy = self.cupy
        with cupy.cuda.Device(arr.device.id):
            if ready is None:
                ready = cupy.cuda.Event(disable_timing=True)
                ready.record(cupy.cuda.get_current_stream())
            self.stream.wait_event(ready)
            call(self.stream.ptr)
            done = cupy.cuda.Event(disable_timing=True)
            done.record(self.stream)
        return DeviceRequest(done)

    def iallreduce_(self, arr, op=SUM, ready=None):
        n, dt = arr.size, self._dtype(arr)

        def call(stream):
            self.nccl_comm.allReduce(arr.data.ptr, arr.data.ptr, n, dt, self._ops[op], stream)
            if op == AVG:
                with self.stream:
                    self.cupy.true_divide(arr, self.size, out=arr)

        return self._launch(arr, ready, call)

    def ibroadcast_(self, arr, root=0):
        n, dt = arr.size, self._dtype(arr)
        return self._launch(arr, None, lambda stream: self.nccl_comm.bcast(arr.data.ptr, n, dt, root, stream))

    def iallgather(self, arr):
        cupy = self.cupy
        src = cupy.ascontiguousarray(arr)
        out = cupy.empty((self.size,) + src.shape, src.dtype)
        req = self._launch(src, None, lambda stream: self.nccl_comm.allGather(
            src.data.ptr, out.data.ptr, src.size, self._dtype(src), stream))
        req.result = list(out)
        return req

    def ireduce_scatter(self, arr, op=SUM, ready=None, counts=None):
        """With ``counts``, NCCL (which has no reduce-scatter of unequal parts) reduces
        each rank's segment to that rank, one ``reduce`` per rank, on the same stream."""
        cupy = self.cupy
        src = cupy.ascontiguousarray(arr)   # the reducer's buckets are contiguous already
        rank = self.rank
        if counts is not None:
            counts = _check_counts(counts, arr, self.size)
            with cupy.cuda.Device(arr.device.id):
                out = cupy.empty(counts[rank], arr.dtype)
        elif arr.shape[0] % self.size:
            raise ValueError(
                f"reduce_scatter: the first dim ({arr.shape[0]}) must divide evenly among {self.size} ranks")
        else:
            with cupy.cuda.Device(arr.device.id):
                out = cupy.empty((arr.shape[0] // self.size,) + arr.shape[1:], arr.dtype)

        def call(stream):
            dt, nop = self._dtype(src), self._ops[op]
            if counts is None:
                self.nccl_comm.reduceScatter(src.data.ptr, out.data.ptr, out.size, dt, nop, stream)
            else:
                flat, start = src.reshape(-1), 0
                for root, n in enumerate(counts):
                    if n:
                        seg = flat[start:start + n]
                        dst = out.data.ptr if root == rank else seg.data.ptr
                        self.nccl_comm.reduce(seg.data.ptr, dst, n, dt, nop, root, stream)
                    start += n
            if op == AVG:
                with self.stream:
                    self.cupy.true_divide(out, self.size, out=out)

        request = self._launch(src, ready, call)
        request.result = out
        request._src = src
        return request


class DeviceRequest(Request):
    """A collective queued on a GPU stream: done when the event after it has completed."""

    def __init__(self, event):
        super().__init__()
        self._event = event

    def test(self) -> bool:
        return self._event.done

    def wait(self) -> None:
        self._event.synchronize()


def gpu_per_rank(local_size: int) -> bool:
    """Whether this node has a GPU for each of its ``local_size`` ranks (False without
    CuPy or a GPU). Counting devices does not create a CUDA context."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() >= local_size
    except Exception:  # no CuPy, no driver, no GPU
        return False


# ---------------------------------------------------------------- communicators
DEVICE_TRANSPORTS = ("auto", "nccl", "staged")


class MPICommunicator(Communicator):
    """Host arrays through MPI; GPU arrays through the device transport (see the
    module's text), created at the first collective on a GPU array."""

    def __init__(self, comm=None, device: str = "auto"):
        from mpi4py import MPI

        if device not in DEVICE_TRANSPORTS:
            raise ValueError(f"device transport {device!r}: use one of {', '.join(DEVICE_TRANSPORTS)}")
        self.MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank = local.Get_rank()
        self.local_size = local.Get_size()
        local.Free()
        self.host = MPITransport(self.comm, MPI)
        self.device_kind = device
        self._device = None
        self._device_lock = threading.Lock()

    @property
    def name(self) -> str:
        return "nccl" if self.device_kind == "nccl" else "mpi"

    # ----------------------------------------------------------- the device side
    def resolve_device(self) -> str:
        """Decide, with every rank, which transport GPU arrays take ("nccl" or
        "staged"); a collective on the first call with ``device="auto"``."""
        if self.device_kind == "auto":
            if self.size == 1:
                self.device_kind = "staged"
            else:
                votes = self.comm.allgather(gpu_per_rank(self.local_size))
                self.device_kind = "nccl" if all(votes) else "staged"
        elif self.device_kind == "nccl" and not gpu_per_rank(self.local_size):
            raise RuntimeError(
                f"NCCL needs one GPU per rank: rank {self.rank} shares its node with {self.local_size - 1} "
                f"other ranks but sees fewer GPUs; use backend='mpi' (GPU arrays staged through host memory)")
        return self.device_kind

    def device_transport(self, device_id=None) -> Transport:
        """The transport of GPU arrays, made at the first call (with ``device_id``, the
        GPU of the array that needs it, current in this thread while NCCL starts)."""
        with self._device_lock:
            if self._device is None:
                if self.resolve_device() == "nccl":
                    import cupy

                    with cupy.cuda.Device(device_id):
                        self._device = NCCLTransport(self.comm, self.rank, self.size)
                else:
                    self._device = StagedTransport(self.host)
            return self._device

    def _transport(self, arr) -> Transport:
        return self.host if isinstance(arr, np.ndarray) else self.device_transport(arr.device.id)

    # ----------------------------------------------------------------- collectives
    def allreduce_(self, arr, op=SUM):
        if self.size > 1:
            self._transport(arr).allreduce_(arr, op)

    def iallreduce_(self, arr, op=SUM, ready=None):
        if self.size == 1:
            return Request()
        return self._transport(arr).iallreduce_(arr, op, ready)

    def broadcast_(self, arr, root=0):
        if self.size > 1:
            self._transport(arr).broadcast_(arr, root)

    def ibroadcast_(self, arr, root=0):
        if self.size == 1:
            return Request()
        return self._transport(arr).ibroadcast_(arr, root)

    def iallgather(self, arr):
        return self._transport(arr).iallgather(arr)

    def allgather(self, arr):
        return self._transport(arr).allgather(arr)

    def reduce_scatter(self, arr, op=SUM):
        return self._transport(arr).reduce_scatter(arr, op)

    def ireduce_scatter(self, arr, op=SUM, ready=None, counts=None):
        if self.size == 1:
            return super().ireduce_scatter(arr, op, ready, counts)
        return self._transport(arr).ireduce_scatter(arr, op, ready, counts)

    def ibarrier(self):
        return Request(self.comm.Ibarrier())

    def barrier(self):
        self.comm.Barrier()

    def allgather_object(self, obj):
        return self.comm.allgather(obj)

    def gather_object(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def broadcast_object(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def dup(self):
        """The same ranks and the same device-transport choice; its own NCCL
        communicator (if any) is made at its own first GPU collective."""
        return MPICommunicator(self.comm.Dup(), self.device_kind)

    def abort(self, code=1):
        self.comm.Abort(code)


class NCCLCommunicator(MPICommunicator):
    """GPU arrays through NCCL (one GPU per rank); host arrays and objects through MPI."""

    def __init__(self, comm=None):
        super().__init__(comm, device="nccl")
