"""Array backends: numpy on the CPU, CuPy on NVIDIA GPUs.

This is the only module that decides which array library holds a tensor's data.
Ops ask ``array_module(arr)`` for the module of their inputs (the ``xp`` pattern)
and never import numpy or cupy themselves. CuPy is imported lazily, the first
time a CUDA device is asked for, so a CPU-only install never needs it.
"""
from __future__ import annotations

import contextlib

import numpy as np
from .dtype import kind_of as _kind_of

ndarray = np.ndarray

_cupy = None          # the cupy module once imported
_cupy_error = None    # why importing it failed


def cupy():
    """The cupy module; a clear error where there is none (or no GPU)."""
    global _cupy, _cupy_error
    if _cupy is None:
        if _cupy_error is not None:
            raise RuntimeError(_cupy_error)
        try:
            import cupy as cp

            if cp.cuda.runtime.getDeviceCount() < 1:
                raise RuntimeError("no CUDA device is visible")
        except Exception as e:  # ImportError, or CUDA driver/runtime errors
            _cupy_error = (
                f"CUDA is not available ({type(e).__name__}: {e}). Install the GPU extra that "
                "matches your CUDA (pip install -e \".[cuda12]\" or \".[cuda13]\") and run on a "
                "machine with an NVIDIA GPU, or use device='cpu'"
            )
            raise RuntimeError(_cupy_error) from None
        _cupy = cp
    return _cupy


def cuda_available() -> bool:
    try:
        cupy()
    except RuntimeError:
        return False
    return True


class device:
    """Where a tensor's data lives: ``device('cpu')``, ``device('cuda')``,
    ``device('cuda:1')`` or ``device('cuda', 1)``, as in PyTorch."""

    __slots__ = ("type", "index")

    def __init__(self, type: str | "device" = "cpu", index: int | None = None):
        if isinstance(type, device):
            type, index = type.type, type.index
        elif isinstance(type, int):
            type, index = "cuda", type
        if ":" in type:
            type, _, idx = type.partition(":")
            try:
                index = int(idx)
            except ValueError:
                raise RuntimeError(f"Invalid device string: '{type}:{idx}'") from None
        if type not in ("cpu", "cuda"):
            raise RuntimeError(
                f"Expected one of cpu, cuda device type at start of device string: {type}"
            )
        if type == "cpu" and index not in (None, 0):
            raise RuntimeError(f"cpu device index must be 0 or None, got {index}")
        self.type = type
        self.index = index

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        if not isinstance(other, device) or self.type != other.type:
            return False
        if self.type == "cuda":
            return _cuda_index(self) == _cuda_index(other)
        return True

    def __hash__(self):
        return hash((self.type, _cuda_index(self) if self.type == "cuda" else None))


CPU = device("cpu")


def _cuda_index(d: device) -> int:
    return d.index if d.index is not None else cupy().cuda.runtime.getDevice()


def normalize(data):
    """An array for an op's result: numpy returns scalars for 0-d results, but a
    tensor's data must be an array (views and in-place writes need memory)."""
    if isinstance(data, np.generic):
        return np.asarray(data)
    return data


def array_module(arr):
    """The array module (numpy or cupy) that owns ``arr``."""
    if type(arr) is np.ndarray or _cupy is None:
        return np
    return _cupy if isinstance(arr, _cupy.ndarray) else np


def is_device_array(arr) -> bool:
    return _cupy is not None and isinstance(arr, _cupy.ndarray)


def device_of(arr) -> device:
    if is_device_array(arr):
        return device("cuda", arr.device.id)
    return CPU


def module_for(dev) -> object:
    """The array module that allocates on ``dev`` (None means the CPU)."""
    if dev is None:
        return np
    d = device(dev)
    return cupy() if d.type == "cuda" else np


def as_array(data, dtype=None, dev=None):
    """Turn a Python scalar, nested list or array into an array on ``dev``."""
    if dev is None or device(dev).type == "cpu":
        return np.asarray(to_numpy(data), dtype=dtype)
    return to_device(np.asarray(data, dtype=dtype) if not is_device_array(data) else data, dev)


def to_device(arr, dev):
    """``arr`` on device ``dev`` (the same array when it is already there)."""
    d = device(dev)
    if d.type == "cpu":
        return to_numpy(arr)
    cp = cupy()
    index = _cuda_index(d)
    if is_device_array(arr) and arr.device.id == index:
        return arr
    with cp.cuda.Device(index):
        return cp.asarray(arr)


def to_numpy(arr):
    """A host (numpy) array with ``arr``'s values (a copy for device arrays)."""
    if is_device_array(arr):
        flush_checks()
        return arr.get()
    return arr


def item(arr):
    """``arr``'s single value as a Python number (a GPU value is read, so the checks
    that ops deferred are run first)."""
    if type(arr) is not np.ndarray and is_device_array(arr):
        flush_checks()
    return arr.item()


# ------------------------------------------------------------- deferred checks
# An op that validates its input against the data (an index in range, a class
# target below C) would make the GPU wait if it read the verdict at once. On a GPU
# the verdict stays a device flag and is read with the next value the program
# reads (``item()``, ``cpu()``, ``synchronize()``), as PyTorch's device-side
# asserts surface at the next synchronization. On the CPU it is checked at once.
_pending: list = []
_MAX_PENDING = 256


def check(bad, error: type, message) -> None:
    """Raise ``error(message())`` when the 0-d boolean array ``bad`` is true: at once
    on the CPU, at the next read of a GPU value on a GPU."""
    if not is_device_array(bad):
        if bad:
            raise error(message())
        return
    _pending.append((bad, error, message))
    if len(_pending) >= _MAX_PENDING:
        flush_checks()


def flush_checks() -> None:
    """Read the deferred checks' flags (one small copy) and raise the first failure."""
    if not _pending:
        return
    items = _pending[:]
    _pending.clear()
    flags = _cupy.stack([b.reshape(()) for b, _, _ in items]).get()
    for (_, error, message), bad in zip(items, flags):
        if bad:
            raise error(f"{message()} (checked on the GPU; the op ran earlier, and this is the "
                        "first value read since)")


def same_device(a, b) -> bool:
    da, db = is_device_array(a), is_device_array(b)
    if da != db:
        return False
    return not da or a.device.id == b.device.id


def synchronize(dev=None) -> None:
    if _cupy is None:
        return
    flush_checks()
    if dev is None:
        _cupy.cuda.Device().synchronize()
    else:
        _cupy.cuda.Device(_cuda_index(device(dev))).synchronize()


def errstate(xp, **kwargs):
    """numpy's floating-point error control; CuPy has none (it never warns)."""
    return np.errstate(**kwargs) if xp is np else contextlib.nullcontext()


def reshape_view(arr, shape):
    """``arr`` viewed with ``shape``; ValueError when that needs a copy."""
    if type(arr) is np.ndarray:
        return np.reshape(arr, shape, copy=False)
    v = arr.view()
    try:
        v.shape = shape
    except AttributeError as e:
        raise ValueError(str(e)) from None
    return v


def freeze(arr):
    """Make a cached host array read-only (device arrays have no such flag)."""
    if type(arr) is np.ndarray:
        arr.flags.writeable = False
    return arr


# ------------------------------------------------------------ fast reductions
_ONES: dict = {}


def sum_leading(arr, k: int):
    """The sum of ``arr`` over its first ``k`` axes. On a GPU, for a C-contiguous float
    array this is a matrix-vector product with a vector of ones (cuBLAS), many times
    faster than CuPy's generic reduction over non-contiguous axes (bias and LayerNorm
    weight gradients are such sums)."""
    if (type(arr) is np.ndarray or not is_device_array(arr) or _kind_of(arr.dtype) != "f"
            or arr.dtype.itemsize < 4 or not arr.flags.c_contiguous or not 0 < k < arr.ndim):
        return arr.sum(axis=tuple(range(k)))
    rest = arr.shape[k:]
    m = arr.size // max(1, _prod(rest))
    if m == 0 or arr.size == 0:
        return arr.sum(axis=tuple(range(k)))
    key = (m, arr.dtype.str, arr.device.id)
    ones = _ONES.get(key)
    if ones is None:
        if len(_ONES) > 64:
            _ONES.clear()
        with _cupy.cuda.Device(arr.device.id):
            ones = _ONES[key] = _cupy.ones(m, arr.dtype)
    return (ones @ arr.reshape(m, -1)).reshape(rest)


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
