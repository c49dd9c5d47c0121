"""Sorting and selection: sort, argsort, topk, kthvalue (with PyTorch's named-tuple
results). Values are differentiable: the gradient goes back to the selected
positions. All the work is done by the array module that owns the input (numpy
or CuPy)."""
from __future__ import annotations

from collections import namedtuple

from ..autograd.function import Node, record
from ._util import _wrap, array_module, wrap_dim

# The result types, as torch.return_types.sort / topk / kthvalue.
sort_t = namedtuple("sort", ["values", "indices"])
topk_t = namedtuple("topk", ["values", "indices"])
kthvalue_t = namedtuple("kthvalue", ["values", "indices"])


class _SelectBackward(Node):
    """The gradient of values picked along ``d`` by ``idx`` (unique per slice):
    scattered into zeros of the input's shape."""

    def backward(self, g):
        shape, d, idx, squeezed = self.args
        if not shape:  # a 0-d input: the value is the input itself
            return g.reshape(())
        if squeezed:
            g = g.unsqueeze(d)
        from .creation import zeros
        from .indexing import scatter_add

        z = zeros(shape, dtype=g.dtype, device=g.device)
        return scatter_add(z, d, idx, g)


class SortBackward0(_SelectBackward):
    pass


class SortBackward1(_SelectBackward):
    """torch.sort(..., stable=True) records this overload's node."""


class TopkBackward0(_SelectBackward):
    pass


class KthvalueBackward0(_SelectBackward):
    pass


def _argsort(x, d, descending):
    """Stable argsort of ``x`` along ``d``; NaN sorts as the largest value (as in
    PyTorch: last ascending, first descending). Ties keep their index order."""
    xp = array_module(x)
    kw = {"kind": "stable"} if xp.__name__ == "numpy" else {}
    if x.dtype.kind == "b":
        x = x.astype(xp.uint8)
    if not descending:
        return xp.argsort(x, axis=d, **kw)
    # Descending and stable: sort the reversed array ascending, reverse the order
    # found and map the indices back; ties then keep ascending index order.
    n = x.shape[d]
    rev = xp.flip(x, axis=d)
    order = xp.flip(xp.argsort(rev, axis=d, **kw), axis=d)
    return (n - 1) - order


def _check_dim(x, dim, op):
    return wrap_dim(dim, x.ndim, op)


def _as_1d(x):
    """0-d inputs are sorted as one-element vectors."""
    return x.reshape(1) if x.ndim == 0 else x


def sort(input, dim=-1, descending=False, stable=False, *, out=None):
    x = input._data
    xp = array_module(x)
    d = _check_dim(x, dim, "sort")
    xa = _as_1d(x)
    idx = _argsort(xa, d, descending).astype(xp.int64, copy=False)
    vals = xp.take_along_axis(xa, idx, axis=d)
    if x.ndim == 0:
        vals, idx = vals.reshape(()), idx.reshape(())
    index = _wrap(idx)
    cls = SortBackward1 if stable else SortBackward0
    values = record(cls, vals, (input,), args=(x.shape, d, index, False))
    return sort_t(values, index)


def argsort(input, dim=-1, descending=False, stable=False):
    x = input._data
    xp = array_module(x)
    d = _check_dim(x, dim, "argsort")
    idx = _argsort(_as_1d(x), d, descending).astype(xp.int64, copy=False)
    return _wrap(idx.reshape(x.shape))


def msort(input):
    return sort(input, 0).values


def topk(input, k, dim=-1, largest=True, sorted=True, *, out=None):
    x = input._data
    xp = array_module(x)
    d = _check_dim(x, dim, "topk")
    xa = _as_1d(x)
    n = xa.shape[d]
    if not isinstance(k, int) or isinstance(k, bool):
        k = int(k)
    if k < 0 or k > n:
        raise RuntimeError(f"selected index k out of range (k={k}, size of dim {d}: {n})")
    order = _argsort(xa, d, largest)
    idx = xp.take(order, xp.arange(k), axis=d).astype(xp.int64, copy=False)
    vals = xp.take_along_axis(xa, idx, axis=d)
    if x.ndim == 0:
        vals, idx = vals.reshape(()), idx.reshape(())
    index = _wrap(idx)
    values = record(TopkBackward0, vals, (input,), args=(x.shape, d, index, False))
    return topk_t(values, index)


def kthvalue(input, k, dim=-1, keepdim=False, *, out=None):
    x = input._data
    xp = array_module(x)
    d = _check_dim(x, dim, "kthvalue")
    xa = _as_1d(x)
    n = xa.shape[d]
    if not 1 <= k <= n:
        raise IndexError(f"kthvalue(): selected number k out of range for dimension {d} "
                         f"(k={k}, size {n})")
    order = _argsort(xa, d, False)
    idx = xp.take(order, xp.arange(k - 1, k), axis=d).astype(xp.int64, copy=False)
    vals = xp.take_along_axis(xa, idx, axis=d)
    keep_idx = _wrap(idx)
    if x.ndim == 0:
        vals, ridx = vals.reshape(()), idx.reshape(())
    elif keepdim:
        ridx = idx
    else:
        vals, ridx = vals.squeeze(d), idx.squeeze(d)
    squeezed = x.ndim > 0 and not keepdim
    values = record(KthvalueBackward0, vals, (input,),
                    args=(x.shape, d, keep_idx, squeezed))
    indices = keep_idx if ridx is idx else _wrap(ridx)
    return kthvalue_t(values, indices)
