"""Shared helpers of the op modules: argument coercion, dims, error translation."""
from __future__ import annotations

from numbers import Number

import numpy as _np

from .. import dtype as _dt
from ..backend import array_module, freeze, ndarray
from ..tensor import Tensor, _wrap, _wrap_dim

__all__ = ["Tensor", "_wrap", "array_module", "as_tensor_arg", "dims_arg", "wrap_dim",
           "broadcast_error", "device_error", "result_float", "scalar_operand", "check_scalar",
           "up", "down"]

_SCALARS: dict = {}
_PY_NUMBERS = (float, int, bool)


def scalar_operand(v, arr):
    """``v`` as the other operand of ``arr``. For a float array and a Python number,
    a cached 0-d array of the array's dtype: the same result (PyTorch's promotion
    keeps the tensor's dtype), but numpy runs it much faster than with a Python
    scalar. Anything else is returned as it is (CuPy takes a Python number as a
    kernel argument, which is what it runs fastest)."""
    dt = arr.dtype
    if _dt.kind_of(dt) == "f" and (type(v) is float or type(v) is int) and type(arr) is ndarray:
        key = (v, dt)
        z = _SCALARS.get(key)
        if z is None:
            if len(_SCALARS) >= 1024:
                _SCALARS.clear()
            z = array_module(arr).asarray(v, dtype=dt)
            freeze(z)
            _SCALARS[key] = z
        return z
    return v


def check_scalar(op, s):
    if type(s) not in _PY_NUMBERS and not isinstance(s, Number):
        raise TypeError(f"{op}(): expected a Tensor or a number as the other operand, got {type(s).__name__}")

wrap_dim = _wrap_dim


def as_tensor_arg(x, like: Tensor, op: str) -> Tensor:
    """A tensor for ``x`` (a tensor, a Python number or a bool) next to ``like``."""
    if isinstance(x, Tensor):
        return x
    if isinstance(x, Number):
        xp = array_module(like._data)
        return _wrap(xp.asarray(x, dtype=_scalar_dtype(x, like._data.dtype)))
    raise TypeError(
        f"{op}(): expected a Tensor or a number, got {type(x).__name__}"
    )


def _scalar_dtype(x, like):
    """PyTorch's rule: a Python scalar takes the tensor's dtype unless its kind is higher."""
    if isinstance(x, bool):
        return like
    if isinstance(x, int):
        return like if like.kind != "b" else _dt.int64.np
    if isinstance(x, float):
        return like if _dt.kind_of(like) == "f" else _dt.get_default_dtype().np
    raise TypeError(f"unsupported scalar {x!r}")


def result_float(arr):
    """Integer and bool arrays become the default float dtype (for ops like exp)."""
    if arr.dtype.kind in "iub":
        return arr.astype(_dt.get_default_dtype().np)
    return arr


def up(arr):
    """``arr`` in float32 when it is bfloat16 (numpy sums, scans and einsum run in
    bfloat16 or not at all; PyTorch accumulates bfloat16 in float32), else as it is."""
    return arr.astype(_np.float32) if _dt.is_bf16_np(arr.dtype) else arr


def matprod(x, y):
    """``x @ y``; on the CPU a float16 product runs in float32 (numpy has no float16
    BLAS: its own loop is ~100x slower) and comes back float32, for the caller to
    round once, as PyTorch's CPU product accumulates float16 in float32."""
    if type(x) is _np.ndarray and x.dtype == _np.float16:
        return x.astype(_np.float32) @ y.astype(_np.float32)
    return x @ y


def down(arr, dt):
    """``arr`` (computed in float32 for a bfloat16 input) rounded back to ``dt``."""
    return arr.astype(dt) if getattr(arr, "dtype", dt) != dt else arr


def dims_arg(dim, ndim: int, op: str):
    """Normalize ``dim`` (None, an int, or a sequence) to a tuple of non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, int):
        return (wrap_dim(dim, ndim, op),)
    out = tuple(wrap_dim(d, ndim, op) for d in dim)
    if len(set(out)) != len(out):
        raise RuntimeError(f"{op}: dim {list(dim)} appears multiple times in the list of dims")
    return out


def device_error(op: str, *tensors):
    """PyTorch's message for tensors on different devices (None when they agree)."""
    from ..backend import device_of, ndarray

    if all(type(t._data) is ndarray for t in tensors if isinstance(t, Tensor)):
        return None  # all on the CPU
    devices = []
    for t in tensors:
        if isinstance(t, Tensor):
            d = str(device_of(t._data))
            if d not in devices:
                devices.append(d)
    if len(devices) > 1:
        return RuntimeError(
            f"Expected all tensors to be on the same device, but found at least two devices, "
            f"{devices[0]} and {devices[1]}! (in {op}); move them with .to(device)"
        )
    return None


def broadcast_error(op: str, a, b) -> RuntimeError:
    """The error for a binary op that failed: tensors on two devices, or PyTorch's
    message for shapes that do not broadcast."""
    err = device_error(op, a, b)
    if err is not None:
        return err
    sa, sb = tuple(a.shape), tuple(b.shape)
    for k in range(1, max(len(sa), len(sb)) + 1):
        x = sa[-k] if k <= len(sa) else 1
        y = sb[-k] if k <= len(sb) else 1
        if x != y and x != 1 and y != 1:
            return RuntimeError(
                f"{op}: The size of tensor a ({x}) must match the size of tensor b ({y}) at "
                f"non-singleton dimension {max(len(sa), len(sb)) - k} (shapes {list(sa)} and {list(sb)})"
            )
    return RuntimeError(f"{op}: shapes {list(sa)} and {list(sb)} cannot be broadcast together")
