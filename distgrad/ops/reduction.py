"""Reductions and normalizing ops: sum, mean, prod, max/min, var/std, norm,
logsumexp, softmax, log_softmax, cumsum, and ``sum_to_size`` (the one place where
broadcasting is undone)."""
from __future__ import annotations

import builtins
from collections import namedtuple

from .. import dtype as _dt
from ..autograd.function import OUTPUT, Node, record
from ..autograd.grad_mode import state as _grad_state
from .. import backend
from ..backend import errstate, ndarray
from . import cpu_kernels, cuda_kernels
from ._util import Tensor, _wrap, array_module, dims_arg, down, up, wrap_dim

_max_t = namedtuple("max", ["values", "indices"])
_min_t = namedtuple("min", ["values", "indices"])


def _reduce_args(input, dim, op):
    """(axes, the shape with reduced dims kept as 1, number of reduced elements)."""
    shape = input._data.shape
    if dim is None or (not isinstance(dim, int) and len(dim) == 0):
        axes = tuple(range(len(shape)))
    else:
        axes = dims_arg(dim, len(shape), op)
    kshape = tuple(1 if i in axes else s for i, s in enumerate(shape))
    n = 1
    for a in axes:
        n *= shape[a]
    return axes, kshape, n


def _keep(g, kshape):
    """Bring a reduced gradient back to keep-dim form."""
    return g if g._data.shape == kshape else g.reshape(kshape)


# ----------------------------------------------------------------- sum/mean
class SumBackward0(Node):
    def backward(self, g):
        shape, kshape = self.args
        return _keep(g, kshape).expand(shape)


class SumBackward1(SumBackward0):
    """sum over given dims (PyTorch's ``sum.dim_IntList`` overload)."""


def sum(input, dim=None, keepdim=False, *, dtype=None):
    x = input._data
    axes, kshape, _ = _reduce_args(input, dim, "sum")
    npd = _dt.to_np(dtype)
    if npd is None and x.dtype.kind in "biu":
        npd = _dt.int64.np
    out = npd if npd is not None else x.dtype
    if _dt.is_bf16_np(out):  # accumulated in float32, rounded once (numpy would add in bfloat16)
        data = down(up(x.astype(out, copy=False)).sum(axis=axes, keepdims=keepdim), out)
    elif npd is None and axes == tuple(range(len(axes))) and type(x) is not ndarray:
        data = backend.sum_leading(x, len(axes))  # fast on a GPU
        if keepdim:
            data = data.reshape((1,) * len(axes) + data.shape)
    else:
        data = x.sum(axis=axes, keepdims=keepdim, dtype=npd)
    cls = SumBackward0 if dim is None else SumBackward1
    return record(cls, array_module(x).asarray(data), (input,), args=(x.shape, kshape))


class NansumBackward0(Node):
    def backward(self, g):
        from .pointwise import isnan, where

        shape, kshape = self.args
        (x,) = self.saved_tensors
        return where(isnan(x), 0.0, _keep(g, kshape).expand(shape))


def nansum(input, dim=None, keepdim=False, *, dtype=None):
    """The sum with NaNs counted as zero; their gradient is zero."""
    out = sum(where_nan_zero(input.detach()), dim, keepdim, dtype=dtype)
    _, kshape, _ = _reduce_args(input, dim, "nansum")
    return record(NansumBackward0, out._data, (input,), (input,), args=(input._data.shape, kshape))


def where_nan_zero(input):
    from .pointwise import isnan, where

    return where(isnan(input), 0.0, input)


class MeanBackward0(Node):
    def backward(self, g):
        shape, kshape, n = self.args
        return _keep(g, kshape).expand(shape) / n


class MeanBackward1(MeanBackward0):
    """mean over given dims (PyTorch's ``mean.dim`` overload)."""


def mean(input, dim=None, keepdim=False, *, dtype=None):
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    elif _dt.kind_of(x.dtype) not in "fc":
        raise RuntimeError(
            "mean(): could not infer output dtype. Input dtype must be either a floating point "
            f"or complex dtype. Got: {input.dtype}; convert first with .float()"
        )
    axes, kshape, n = _reduce_args(input, dim, "mean")
    data = up(x).mean(axis=axes, keepdims=keepdim)
    cls = MeanBackward0 if dim is None else MeanBackward1
    return record(cls, array_module(x).asarray(data, dtype=x.dtype), (input,),
                  args=(x.shape, kshape, n))


def sum_to_size(input, *size):
    """Sum ``input`` down to ``size``, which it must be expandable from (broadcasting undone)."""
    if len(size) == 1 and not isinstance(size[0], int):
        size = tuple(size[0])
    shape = input._data.shape
    lead = len(shape) - len(size)
    # builtins.all: this module's own ``all`` is the tensor reduction.
    if lead < 0 or not builtins.all(s == 1 or s == gs for s, gs in zip(size, shape[lead:])):
        raise RuntimeError(f"size {list(size)} is not expandable to size {list(shape)}.")
    dims = tuple(range(lead)) + tuple(
        lead + k for k, s in enumerate(size) if s == 1 and shape[lead + k] != 1
    )
    out = input.sum(dim=dims, keepdim=True) if dims else input
    if lead:
        out = out.reshape(size)
    return out


# --------------------------------------------------------------------- prod
class ProdBackward0(Node):
    def backward(self, g):
        (x, out) = self.saved_tensors
        shape, kshape, axes = self.args
        g = _keep(g, kshape)
        outk = _keep(out, kshape)
        if not (x._data == 0).any():
            return g * outk / x
        if g.requires_grad:
            raise RuntimeError(
                "prod: differentiating twice through a product whose input contains zeros is "
                "not supported"
            )
        # Product of all the other elements, without dividing by zero.
        xp = array_module(x._data)
        xd = x._data
        flat = xp.moveaxis(xd, axes, tuple(range(-len(axes), 0)))
        lead_shape = flat.shape[: flat.ndim - len(axes)]
        flat = flat.reshape(lead_shape + (-1,))
        ones = xp.ones(lead_shape + (1,), xd.dtype)
        left = xp.cumprod(xp.concatenate([ones, flat[..., :-1]], -1), -1)
        right = xp.flip(xp.cumprod(xp.flip(xp.concatenate([flat[..., 1:], ones], -1), -1), -1), -1)
        others = (left * right).reshape(lead_shape + tuple(xd.shape[a] for a in axes))
        others = xp.moveaxis(others, tuple(range(-len(axes), 0)), axes)
        return g * _wrap(xp.ascontiguousarray(others))


def prod(input, dim=None, keepdim=False, *, dtype=None):
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    elif x.dtype.kind in "biu":
        x = x.astype(_dt.int64.np)
    axes, kshape, _ = _reduce_args(input, dim, "prod")
    if dim is not None and not isinstance(dim, int):
        raise TypeError("prod(): dim must be an int (PyTorch reduces one dim at a time)")
    data = array_module(x).asarray(down(up(x).prod(axis=axes, keepdims=keepdim), x.dtype))
    return record(ProdBackward0, data, (input,), (input, OUTPUT), args=(x.shape, kshape, axes))


# ----------------------------------------------------------------- max/min
class MaxBackward1(Node):
    """Full or amax/amin-style reduction: ties share the gradient evenly."""

    def backward(self, g):
        (x, out) = self.saved_tensors
        kshape, axes = self.args
        mask = (x == _keep(out, kshape)).to(g.dtype)
        return _keep(g, kshape) * mask / mask.sum(dim=axes, keepdim=True)


class MinBackward1(MaxBackward1):
    pass


class AmaxBackward0(MaxBackward1):
    pass


class AminBackward0(MaxBackward1):
    pass


def _extreme_all(input, is_max, cls, dim=None, keepdim=False):
    x = input._data
    if x.size == 0:
        name = "max" if is_max else "min"
        raise RuntimeError(
            f"{name}(): Expected reduction dim to be specified for input.numel() == 0. "
            "Specify the reduction dim with the 'dim' argument."
        )
    axes, kshape, _ = _reduce_args(input, dim, "amax" if is_max else "amin")
    data = x.max(axis=axes, keepdims=keepdim) if is_max else x.min(axis=axes, keepdims=keepdim)
    return record(cls, array_module(x).asarray(data), (input,), (input, OUTPUT), args=(kshape, axes))


class MaxBackward0(Node):
    """max/min along a dim: the gradient goes to the selected index."""

    def backward(self, g):
        shape, d, idx, keepdim = self.args
        if not shape:  # max(dim=0) of a 0-d tensor is the tensor itself
            return g
        if not keepdim:
            g = g.unsqueeze(d)
        from .indexing import scatter_add
        from .creation import zeros

        z = zeros(shape, dtype=g.dtype, device=g.device)
        return scatter_add(z, d, idx, g)


class MinBackward0(MaxBackward0):
    pass


def _extreme_dim(input, dim, keepdim, is_max, cls, tuple_type):
    x = input._data
    xp = array_module(x)
    d = wrap_dim(dim, x.ndim, "max" if is_max else "min")
    if x.ndim and x.shape[d] == 0:
        raise IndexError(f"max(): Expected reduction dim {d} to have non-zero size.")
    idx = (xp.argmax if is_max else xp.argmin)(x, axis=d, keepdims=True) if x.ndim else xp.zeros((), xp.int64)
    if x.ndim:
        vals = xp.take_along_axis(x, idx, axis=d)
        if not keepdim:
            vals = vals.squeeze(d)
    else:
        vals = x.copy()
    keep_idx = _wrap(idx.astype(xp.int64))
    values = record(cls, vals, (input,), args=(x.shape, d, keep_idx, keepdim))
    indices = keep_idx if keepdim or not x.ndim else _wrap(idx.squeeze(d).astype(xp.int64))
    return tuple_type(values, indices)


def max(input, dim=None, keepdim=False, *, out=None):
    if isinstance(dim, Tensor):
        from .pointwise import maximum

        return maximum(input, dim)
    if dim is None:
        return _extreme_all(input, True, MaxBackward1)
    return _extreme_dim(input, dim, keepdim, True, MaxBackward0, _max_t)


def min(input, dim=None, keepdim=False, *, out=None):
    if isinstance(dim, Tensor):
        from .pointwise import minimum

        return minimum(input, dim)
    if dim is None:
        return _extreme_all(input, False, MinBackward1)
    return _extreme_dim(input, dim, keepdim, False, MinBackward0, _min_t)


def amax(input, dim=(), keepdim=False):
    return _extreme_all(input, True, AmaxBackward0, dim, keepdim)


def amin(input, dim=(), keepdim=False):
    return _extreme_all(input, False, AminBackward0, dim, keepdim)


def _arg_extreme(input, dim, keepdim, name):
    x = input._data
    xp = array_module(x)
    fn = getattr(xp, name)
    if dim is None:
        r = xp.asarray(fn(x), dtype=xp.int64)
        return _wrap(r.reshape((1,) * x.ndim) if keepdim else r)
    return _wrap(fn(x, axis=wrap_dim(dim, x.ndim, name), keepdims=keepdim).astype(xp.int64))


def argmax(input, dim=None, keepdim=False):
    return _arg_extreme(input, dim, keepdim, "argmax")


def argmin(input, dim=None, keepdim=False):
    return _arg_extreme(input, dim, keepdim, "argmin")


def all(input, dim=None, keepdim=False):
    axes = None if dim is None else dims_arg(dim, input._data.ndim, "all")
    return _wrap(array_module(input._data).asarray(input._data.all(axis=axes, keepdims=keepdim)))


def any(input, dim=None, keepdim=False):
    axes = None if dim is None else dims_arg(dim, input._data.ndim, "any")
    return _wrap(array_module(input._data).asarray(input._data.any(axis=axes, keepdims=keepdim)))


# ------------------------------------------------------------------ var/std
def _correction(correction, unbiased):
    if unbiased is not None:
        if correction is not None:
            raise TypeError("var/std: pass either correction or unbiased, not both")
        return 1 if unbiased else 0
    return 1 if correction is None else correction


class VarBackward0(Node):
    def backward(self, g):
        (x,) = self.saved_tensors
        kshape, axes, denom = self.args
        centered = x - x.mean(dim=axes, keepdim=True)
        return _keep(g, kshape) * centered * (2.0 / denom)


def var(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    c = _correction(correction, unbiased)
    x = input._data
    axes, kshape, n = _reduce_args(input, dim, "var")
    data = array_module(x).asarray(up(x).var(axis=axes, ddof=c, keepdims=keepdim))
    return record(VarBackward0, data.astype(x.dtype, copy=False), (input,), (input,), args=(kshape, axes, n - c))


class StdBackward0(Node):
    def backward(self, g):
        (x, out) = self.saved_tensors
        kshape, axes, denom = self.args
        centered = x - x.mean(dim=axes, keepdim=True)
        return _keep(g, kshape) * centered / (_keep(out, kshape) * denom)


def std(input, dim=None, unbiased=None, keepdim=False, *, correction=None):
    c = _correction(correction, unbiased)
    x = input._data
    axes, kshape, n = _reduce_args(input, dim, "std")
    xp = array_module(x)
    with errstate(xp, divide="ignore", invalid="ignore"):
        data = xp.asarray(up(x).std(axis=axes, ddof=c, keepdims=keepdim)).astype(x.dtype, copy=False)
    return record(StdBackward0, data, (input,), (input, OUTPUT), args=(kshape, axes, n - c))


def var_mean(input, dim=None, *, correction=1, keepdim=False):
    return var(input, dim, keepdim=keepdim, correction=correction), mean(input, dim, keepdim)


def std_mean(input, dim=None, *, correction=1, keepdim=False):
    return std(input, dim, keepdim=keepdim, correction=correction), mean(input, dim, keepdim)


# --------------------------------------------------------------------- norm
class NormBackward1(Node):
    def backward(self, g):
        (x, out) = self.saved_tensors
        kshape, axes, p = self.args
        from .pointwise import abs as _abs, sign, where

        g = _keep(g, kshape)
        outk = _keep(out, kshape)
        if p == 1:
            return g * sign(x)
        if p == float("inf") or p == float("-inf"):
            mask = (_abs(x) == outk).to(g.dtype)
            return g * sign(x) * mask / mask.sum(dim=axes, keepdim=True)
        # A zero norm has gradient 0, as in PyTorch; dividing by 1 there instead of 0 keeps
        # numpy from warning about the value that where() throws away.
        zero = outk == 0
        safe = where(zero, 1.0, outk)
        if p == 2:
            return x * where(zero, 0.0, g / safe)
        return x * _abs(x) ** (p - 2) * where(zero, 0.0, g / safe ** (p - 1))


def norm(input, p="fro", dim=None, keepdim=False, dtype=None):
    if p in ("fro", None):
        p = 2
    if p == "nuc":
        raise NotImplementedError("norm: the nuclear norm is not supported")
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    if _dt.kind_of(x.dtype) != "f":
        raise RuntimeError(f"norm(): input dtype should be floating point, but got {input.dtype}")
    axes, kshape, _ = _reduce_args(input, dim, "norm")
    xp = array_module(x)
    dt, x = x.dtype, up(x)
    a = xp.abs(x)
    if p == float("inf"):
        data = a.max(axis=axes, keepdims=keepdim)
    elif p == float("-inf"):
        data = a.min(axis=axes, keepdims=keepdim)
    elif p == 0:
        data = (x != 0).sum(axis=axes, keepdims=keepdim).astype(dt)
        return _wrap(xp.asarray(data))
    elif p == 1:
        data = a.sum(axis=axes, keepdims=keepdim)
    elif p == 2:
        data = xp.sqrt((x * x).sum(axis=axes, keepdims=keepdim))
    else:
        data = (a ** p).sum(axis=axes, keepdims=keepdim) ** (1.0 / p)
    data = xp.asarray(data).astype(dt, copy=False)
    return record(NormBackward1, data, (input,), (input, OUTPUT), args=(kshape, axes, p))


# ----------------------------------------------------- logsumexp / softmax
class LogsumexpBackward0(Node):
    def backward(self, g):
        (x, out) = self.saved_tensors
        kshape = self.args
        from .pointwise import exp

        return _keep(g, kshape) * exp(x - _keep(out, kshape))


def logsumexp(input, dim, keepdim=False):
    x = input._data
    if _dt.kind_of(x.dtype) != "f":
        x = x.astype(_dt.get_default_dtype().np)
    axes, kshape, _ = _reduce_args(input, dim, "logsumexp")
    xp = array_module(x)
    dt, x = x.dtype, up(x)
    m = x.max(axis=axes, keepdims=True) if x.size else xp.zeros(kshape, x.dtype)
    m = xp.where(xp.isfinite(m), m, 0)
    data = xp.log(xp.exp(x - m).sum(axis=axes, keepdims=True)) + m
    if not keepdim:
        data = data.reshape([s for i, s in enumerate(x.shape) if i not in axes])
    return record(LogsumexpBackward0, xp.asarray(down(data, dt)), (input,), (input, OUTPUT), args=kshape)


class SoftmaxBackward0(Node):
    def backward(self, g):
        (y,) = self.saved_tensors
        d = self.args
        if (not _grad_state.enabled and d == y._data.ndim - 1 and cuda_kernels.rows_supported(y._data)
                and g._data.dtype == y._data.dtype):
            xp = array_module(y._data)  # the GPU row kernel: one pass
            return _wrap(cuda_kernels.softmax_backward(xp.ascontiguousarray(y._data),
                                                       xp.ascontiguousarray(g._data)))
        if (not _grad_state.enabled and d == y._data.ndim - 1 and cpu_kernels.use(y._data)
                and g._data.dtype == y._data.dtype and g._data.shape == y._data.shape):
            return _wrap(cpu_kernels.softmax_grad(y._data, g._data))
        return y * (g - (g * y).sum(dim=d, keepdim=True))


def _softmax_arr(x, d):
    xp = array_module(x)
    e = xp.exp(x - x.max(axis=d, keepdims=True))
    e /= e.sum(axis=d, keepdims=True)
    return e


def softmax(input, dim, dtype=None):
    if input._data.ndim == 0:  # one element: dim 0 or -1, as PyTorch allows
        wrap_dim(dim, 1, "softmax")
        return softmax(input.reshape(1), 0, dtype).reshape(())
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    elif _dt.kind_of(x.dtype) != "f":
        x = x.astype(_dt.get_default_dtype().np)
    d = wrap_dim(dim, x.ndim, "softmax")
    if d == x.ndim - 1 and cuda_kernels.rows_supported(x):
        data = cuda_kernels.softmax_forward(array_module(x).ascontiguousarray(x))  # one GPU pass
    elif d == x.ndim - 1 and cpu_kernels.use(x):
        data = cpu_kernels.softmax(x)
    else:
        data = down(_softmax_arr(up(x), d), x.dtype)
    return record(SoftmaxBackward0, data, (input,), (OUTPUT,), args=d)


class LogSoftmaxBackward0(Node):
    def backward(self, g):
        (y,) = self.saved_tensors
        d = self.args
        if not _grad_state.enabled:   # not create_graph: no graph to build through it
            out = cpu_kernels.log_softmax_grad(y._data, g._data, d)
            if out is not None:
                return _wrap(out)
        from .pointwise import exp

        return g - exp(y) * g.sum(dim=d, keepdim=True)


def log_softmax(input, dim, dtype=None):
    if input._data.ndim == 0:  # one element: dim 0 or -1, as PyTorch allows
        wrap_dim(dim, 1, "log_softmax")
        return log_softmax(input.reshape(1), 0, dtype).reshape(())
    x = input._data
    if dtype is not None:
        x = x.astype(_dt.to_np(dtype))
    elif _dt.kind_of(x.dtype) != "f":
        x = x.astype(_dt.get_default_dtype().np)
    d = wrap_dim(dim, x.ndim, "log_softmax")
    xp = array_module(x)
    data = cpu_kernels.log_softmax(x, d)
    if data is None:
        dt, x = x.dtype, up(x)
        shifted = x - x.max(axis=d, keepdims=True)
        data = down(shifted - xp.log(xp.exp(shifted).sum(axis=d, keepdims=True)), dt)
    return record(LogSoftmaxBackward0, data, (input,), (OUTPUT,), args=d)


# ------------------------------------------------------------------- cumsum
class CumsumBackward0(Node):
    def backward(self, g):
        d = self.args
        return g.flip(d).cumsum(d).flip(d)


def cumsum(input, dim, *, dtype=None):
    x = input._data
    d = wrap_dim(dim, x.ndim, "cumsum")
    npd = _dt.to_np(dtype)
    if npd is None and x.dtype.kind in "biu":
        npd = _dt.int64.np
    out = npd if npd is not None else x.dtype
    if _dt.is_bf16_np(out):  # accumulated in float32, rounded per element
        data = down(up(x.astype(out, copy=False)).cumsum(axis=d) if x.ndim else x.astype(out, copy=True), out)
    else:
        data = x.cumsum(axis=d, dtype=npd) if x.ndim else x.astype(npd or x.dtype, copy=True)
    return record(CumsumBackward0, data, (input,), args=d)
