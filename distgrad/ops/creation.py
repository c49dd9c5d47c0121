"""Creation functions: tensor, zeros, ones, full, empty, arange, linspace, eye,
randn, rand, randint, randperm, the ``*_like`` forms and random in-place fills."""
from __future__ import annotations

from numbers import Number

import numpy as np

from .. import backend
from .. import dtype as _dt
from ..autograd.grad_mode import state as _state
from ..random import rng
from ..tensor import Tensor, _wrap


def _make(device, fn, *args, **kwargs):
    """``fn`` (an array-module function name: zeros, ones, ...) called on the module
    that allocates on ``device``: a device array is made there, never copied over."""
    return getattr(backend.module_for(device), fn)(*args, **kwargs)


def _finish(data, requires_grad=False, device=None) -> Tensor:
    """Wrap a host array as a tensor on ``device`` (inference-marked in inference mode)."""
    t = _wrap(backend.as_array(data, dev=device))
    if _state.inference:
        t._is_inference = True
    if requires_grad:
        t.requires_grad_(True)
    return t


def _size(size) -> tuple:
    if len(size) == 1 and not isinstance(size[0], Number):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise RuntimeError(f"Trying to create tensor with invalid size {list(size)}: sizes must be non-negative ints")
    return tuple(int(s) for s in size)


def _float(dtype):
    return _dt.to_np(dtype) if dtype is not None else _dt.get_default_dtype().np


def _infer(arr):
    """PyTorch's inference: Python floats -> default dtype, ints -> int64."""
    k = arr.dtype.kind
    if k == "f":
        return arr.astype(_dt.get_default_dtype().np)
    if k in "iu":
        return arr.astype(np.int64)
    if k == "b":
        return arr
    raise TypeError(f"tensor(): could not infer a dtype for data of numpy dtype {arr.dtype}")


def _to_array(data):
    if isinstance(data, Tensor):
        return backend.to_numpy(data._data)
    if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
        return np.asarray([_to_array(x) for x in data])
    return data


def _flat(data):
    for x in data:
        if isinstance(x, (list, tuple)):
            yield from _flat(x)
        else:
            yield x


def tensor(data, *, dtype=None, device=None, requires_grad=False, pin_memory=False) -> Tensor:
    """A new tensor holding a copy of ``data`` (a number, nested sequence or array)."""
    src = _to_array(data)
    if isinstance(src, np.ndarray) or np.isscalar(src) and isinstance(src, np.generic):
        arr = np.array(src, dtype=_dt.to_np(dtype))
    else:
        try:
            arr = np.array(src, dtype=_dt.to_np(dtype))
        except ValueError as e:
            raise ValueError(f"tensor(): the data is not a regular nested sequence of numbers ({e})") from None
        if dtype is None:
            arr = _infer(arr)
    if arr.dtype == object:
        raise TypeError("tensor(): could not convert the data to a numeric array")
    _dt.from_numpy_dtype(arr.dtype)
    return _finish(arr, requires_grad, device)


def as_tensor(data, dtype=None, device=None) -> Tensor:
    if isinstance(data, Tensor) and (dtype is None or data.dtype == _dt.to_dtype(dtype)):
        return data
    if isinstance(data, np.ndarray) and (dtype is None or data.dtype == _dt.to_np(dtype)):
        return from_numpy(data)
    return tensor(data, dtype=dtype, device=device)


def from_numpy(ndarray) -> Tensor:
    """A tensor sharing memory with ``ndarray``."""
    _dt.from_numpy_dtype(ndarray.dtype)
    return _finish(ndarray)


def zeros(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _finish(_make(device, "zeros", _size(size), _float(dtype)), requires_grad, device)


def ones(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _finish(_make(device, "ones", _size(size), _float(dtype)), requires_grad, device)


def empty(*size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _finish(_make(device, "empty", _size(size), _float(dtype)), requires_grad, device)


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if dtype is None:
        if isinstance(fill_value, bool):
            dtype = _dt.bool
        elif isinstance(fill_value, int):
            dtype = _dt.int64
    return _finish(_make(device, "full", _size((size,)), fill_value, _float(dtype)), requires_grad, device)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None:
        start, end = 0, start
    if step == 0:
        raise RuntimeError("arange: step must be nonzero")
    vals = [v.item() if isinstance(v, Tensor) else v for v in (start, end, step)]
    if dtype is None:
        dtype = _dt.int64 if all(isinstance(v, int) for v in vals) else _dt.get_default_dtype()
    return _finish(_make(device, "arange", *vals, dtype=_dt.to_np(dtype)), requires_grad, device)


def linspace(start, end, steps, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    if steps < 0:
        raise RuntimeError("linspace: number of steps must be non-negative")
    return _finish(np.linspace(start, end, steps, dtype=np.float64).astype(_float(dtype)), requires_grad, device)


def eye(n, m=None, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return _finish(_make(device, "eye", n, m, dtype=_float(dtype)), requires_grad, device)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _float(dtype)
    return _finish(rng(generator).standard_normal(_size(size), dtype=np.float64).astype(d), requires_grad, device)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _float(dtype)
    return _finish(rng(generator).random(_size(size), dtype=np.float64).astype(d), requires_grad, device)


def randint(low, high=None, size=None, *, generator=None, dtype=None, device=None,
            requires_grad=False) -> Tensor:
    if size is None:
        if high is None or isinstance(high, (tuple, list)):
            low, high, size = 0, low, high
        else:
            raise TypeError("randint() missing required argument 'size'")
    if high is None:
        low, high = 0, low
    if low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    d = _dt.to_np(dtype) if dtype is not None else np.int64
    return _finish(rng(generator).integers(low, high, _size((size,))).astype(d), requires_grad, device)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    d = _dt.to_np(dtype) if dtype is not None else np.int64
    return _finish(rng(generator).permutation(n).astype(d), requires_grad, device)


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    """Normal samples: elementwise for tensor ``mean``/``std`` (broadcast; the result
    takes their dtype and device), or of ``size`` for numbers, as ``torch.normal``."""
    if isinstance(mean, Tensor) or isinstance(std, Tensor):
        m = backend.to_numpy(mean._data) if isinstance(mean, Tensor) else mean
        s = backend.to_numpy(std._data) if isinstance(std, Tensor) else std
        likes = [t for t in (mean, std) if isinstance(t, Tensor)]
        dt = likes[0]._data.dtype if len(likes) == 1 else np.result_type(*(t._data.dtype for t in likes))
        if not _dt.is_float_np(dt):
            raise RuntimeError(f"normal expects floating-point mean and std, got {dt}")
        draw = rng(generator).normal(m, s, np.broadcast_shapes(*(np.shape(v) for v in (m, s))))
        return _finish(np.asarray(draw).astype(dt), device=backend.device_of(likes[0]._data))
    if size is None:
        raise TypeError("normal() with a number mean and std needs size (normal(mean, std, size))")
    d = _float(dtype)
    return _finish(rng(generator).normal(mean, std, _size((size,))).astype(d), requires_grad, device)


def multinomial(input, num_samples, replacement=False, *, generator=None) -> Tensor:
    p = backend.to_numpy(input._data).astype(np.float64)
    p = p / p.sum(-1, keepdims=True)
    g = rng(generator)
    rows = p.reshape(-1, p.shape[-1])
    out = np.stack([g.choice(p.shape[-1], num_samples, replace=replacement, p=r) for r in rows])
    return _finish(out.reshape(p.shape[:-1] + (num_samples,)).astype(np.int64),
                   device=backend.device_of(input._data))


# ---------------------------------------------------------------- *_like
def _like_dtype(input, dtype):
    return input._data.dtype if dtype is None else _dt.to_np(dtype)


def _like_device(input, device):
    return device if device is not None else backend.device_of(input._data)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = _like_device(input, device)
    return _finish(_make(dev, "zeros", input._data.shape, _like_dtype(input, dtype)), requires_grad, dev)


def ones_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = _like_device(input, device)
    return _finish(_make(dev, "ones", input._data.shape, _like_dtype(input, dtype)), requires_grad, dev)


def empty_like(input, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = _like_device(input, device)
    return _finish(_make(dev, "empty", input._data.shape, _like_dtype(input, dtype)), requires_grad, dev)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    dev = _like_device(input, device)
    return _finish(_make(dev, "full", input._data.shape, fill_value, _like_dtype(input, dtype)), requires_grad, dev)


def randn_like(input, *, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    return randn(input._data.shape, dtype=dtype or _dt.from_numpy_dtype(input._data.dtype),
                 requires_grad=requires_grad, generator=generator, device=_like_device(input, device))


def rand_like(input, *, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    return rand(input._data.shape, dtype=dtype or _dt.from_numpy_dtype(input._data.dtype),
                requires_grad=requires_grad, generator=generator, device=_like_device(input, device))


def randint_like(input, low, high=None, *, dtype=None, device=None, generator=None) -> Tensor:
    return randint(low, high, input._data.shape, dtype=dtype or _dt.from_numpy_dtype(input._data.dtype),
                   generator=generator, device=_like_device(input, device))


# ---------------------------------------------------------- Tensor.new_*
def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return tensor(data, dtype=dtype or _dt.from_numpy_dtype(self._data.dtype), requires_grad=requires_grad,
                  device=_like_device(self, device))


def new_zeros(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return zeros(*size, dtype=dtype or _dt.from_numpy_dtype(self._data.dtype), requires_grad=requires_grad,
                 device=_like_device(self, device))


def new_ones(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return ones(*size, dtype=dtype or _dt.from_numpy_dtype(self._data.dtype), requires_grad=requires_grad,
                 device=_like_device(self, device))


def new_empty(self, *size, dtype=None, device=None, requires_grad=False) -> Tensor:
    return empty(*size, dtype=dtype or _dt.from_numpy_dtype(self._data.dtype), requires_grad=requires_grad,
                 device=_like_device(self, device))


def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False) -> Tensor:
    return full(size, fill_value, dtype=dtype or _dt.from_numpy_dtype(self._data.dtype),
                requires_grad=requires_grad, device=_like_device(self, device))


# ------------------------------------------------- random in-place fills
def _fill_random(self, name, values):
    from .inplace import apply_inplace

    return apply_inplace(self, name, lambda t: t, kernel=lambda a: a.__setitem__(Ellipsis, values))


def uniform_(self, a=0.0, b=1.0, *, generator=None) -> Tensor:
    return _fill_random(self, "uniform_", rng(generator).uniform(a, b, self._data.shape))


def normal_(self, mean=0.0, std=1.0, *, generator=None) -> Tensor:
    return _fill_random(self, "normal_", rng(generator).normal(mean, std, self._data.shape))


def bernoulli_(self, p=0.5, *, generator=None) -> Tensor:
    return _fill_random(self, "bernoulli_", rng(generator).random(self._data.shape) < p)


def random_(self, low=0, high=None, *, generator=None) -> Tensor:
    if high is None:
        low, high = 0, low
    return _fill_random(self, "random_", rng(generator).integers(low, high, self._data.shape))
