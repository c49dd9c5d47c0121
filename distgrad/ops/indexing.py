"""Indexing: ``x[key]`` (basic keys give views, tensor keys copies), gather,
scatter_add, index_select, index_add, masked_fill, tril/triu, one_hot."""
from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from .. import backend
from ..autograd.function import Node, as_view, record
from . import _jit_kernels
from ._util import Tensor, _wrap, array_module, as_tensor_arg, wrap_dim


def _convert_key(key):
    """numpy key for ``key``, and whether it is basic (ints, slices, None, ...)."""
    if not isinstance(key, tuple):
        key = (key,)
    out, basic = [], True
    for k in key:
        if isinstance(k, Tensor):
            arr = k._data
            if arr.dtype.kind not in "biu":
                raise IndexError(
                    f"tensors used as indices must be long, int, byte or bool tensors, got {k.dtype}"
                )
            out.append(arr)
            basic = False
        elif isinstance(k, bool):
            out.append(k)
            basic = False
        elif isinstance(k, Integral):
            out.append(int(k))
        elif isinstance(k, (list, tuple)):
            out.append(_list_index(k))
            basic = False
        elif k is None or k is Ellipsis or isinstance(k, slice):
            if isinstance(k, slice) and k.step is not None and k.step <= 0:
                raise ValueError("step must be greater than zero")
            out.append(k)
        elif hasattr(k, "dtype") and hasattr(k, "shape"):  # an array
            out.append(k)
            basic = False
        else:
            raise IndexError(
                f"only integers, slices (`:`), ellipsis (`...`), None and long or bool tensors "
                f"are valid indices (got {type(k).__name__})"
            )
    if basic and Ellipsis not in out:
        out.append(Ellipsis)  # keeps numpy returning a (0-d) view rather than a scalar
    return tuple(out), basic


def _list_index(k):
    import numpy as np

    arr = np.asarray([x._data if isinstance(x, Tensor) else x for x in k])
    if arr.dtype.kind not in "biu":
        raise IndexError(f"tensors used as indices must be long, int, byte or bool tensors, got {arr.dtype}")
    return arr


def _index_error(input, key, exc):
    return IndexError(f"index {key!r} is out of bounds for tensor of shape {list(input._data.shape)}: {exc}")


class SliceBackward0(Node):
    def backward(self, g):
        shape, key = self.args
        return slice_scatter_zeros(g, shape, key)


class SelectBackward0(SliceBackward0):
    pass


class IndexBackward0(Node):
    def backward(self, g):
        shape, key = self.args
        return index_put_zeros(g, shape, key)


def getitem(input, key):
    k, basic = _convert_key(key)
    try:
        data = input._data[k]
    except IndexError as e:
        raise _index_error(input, key, e) from None
    if basic:
        cls = SelectBackward0 if all(isinstance(x, int) or x is Ellipsis for x in k) else SliceBackward0
        out = record(cls, data, (input,), args=(input._data.shape, k))
        return as_view(input, out, lambda b: b[key])
    return record(IndexBackward0, data, (input,), args=(input._data.shape, k))


class SliceScatterZerosBackward0(Node):
    def backward(self, g):
        return g[self.args]


def slice_scatter_zeros(src, shape, key):
    """Zeros of ``shape`` with ``src`` written at basic-index ``key``."""
    z = array_module(src._data).zeros(shape, src._data.dtype)
    z[key] = src._data
    return record(SliceScatterZerosBackward0, z, (src,), args=key)


class IndexPutZerosBackward0(Node):
    def backward(self, g):
        return g[self.args]


def index_put_zeros(src, shape, key):
    """Zeros of ``shape`` with ``src`` added at index ``key`` (repeated indices sum)."""
    xp = array_module(src._data)
    z = xp.zeros(shape, src._data.dtype)
    xp.add.at(z, key, src._data)
    return record(IndexPutZerosBackward0, z, (src,), args=key)


class IndexPutBackward0(Node):
    def backward(self, g):
        key, accumulate = self.args
        gs = None
        if self.needs(0):
            gs = g if accumulate else index_put(g, key, 0.0)
        gv = g[key] if self.needs(1) else None
        return gs, gv


def index_put(input, indices, values, accumulate=False):
    """Out-of-place ``input[indices] = values`` (or ``+=`` with ``accumulate``)."""
    k, _ = _convert_key(indices)
    values = as_tensor_arg(values, input, "index_put")
    xp = array_module(input._data)
    data = input._data.copy()
    try:
        if accumulate:
            xp.add.at(data, k, values._data)
        else:
            data[k] = values._data
    except (IndexError, ValueError) as e:
        raise RuntimeError(
            f"index_put: cannot put values of shape {list(values._data.shape)} into tensor of "
            f"shape {list(input._data.shape)} at index {indices!r}: {e}"
        ) from None
    return record(IndexPutBackward0, data, (input, values), args=(k, accumulate))


# ------------------------------------------------------------ gather/scatter
def _along_dim_index(index_arr, dim):
    """Full fancy-index tuple addressing ``index_arr`` along ``dim``."""
    xp = array_module(index_arr)
    nd = index_arr.ndim
    grids = [xp.arange(n).reshape((1,) * k + (n,) + (1,) * (nd - k - 1))
             for k, n in enumerate(index_arr.shape)]
    grids[dim] = index_arr
    return tuple(grids)


def _check_index(op, input, dim, index):
    if not isinstance(index, Tensor) or index._data.dtype.kind not in "iu":
        raise RuntimeError(f"{op}(): Expected dtype int64 for index")
    if index._data.ndim != input._data.ndim:
        raise RuntimeError(
            f"{op}(): Index tensor must have the same number of dimensions as input tensor "
            f"(index {list(index._data.shape)}, input {list(input._data.shape)})"
        )
    for d, (i, s) in enumerate(zip(index._data.shape, input._data.shape)):
        if d != dim and i > s:
            raise RuntimeError(
                f"{op}(): Size does not match at dimension {d} expected index "
                f"{list(index._data.shape)} to be smaller than self {list(input._data.shape)} "
                f"apart from dimension {dim}"
            )
    size = input._data.shape[dim] if input._data.ndim else 1
    if index._data.size:
        lo, hi = index._data.min(), index._data.max()
        backend.check((hi >= size) | (lo < -size), IndexError, lambda: (
            f"{op}(): index {int(hi) if int(hi) >= size else int(lo)} is out of bounds for dimension "
            f"{dim} with size {size}"))


class GatherBackward0(Node):
    def backward(self, g):
        shape, dim, index = self.args
        from .creation import zeros

        return scatter_add(zeros(shape, dtype=g.dtype, device=g.device), dim, index, g)


def gather(input, dim, index, *, sparse_grad=False):
    d = wrap_dim(dim, input._data.ndim, "gather")
    _check_index("gather", input, d, index)
    data = input._data[_along_dim_index(index._data, d)]
    return record(GatherBackward0, data, (input,), args=(input._data.shape, d, index))


def _src_grad(g, dim, index, src_shape):
    """Gradient of a scatter's ``src``: the output's gradient where ``index`` sent each
    element, and zero for the part of ``src`` beyond ``index``'s shape (never read)."""
    gs = g.gather(dim, index)
    if gs._data.shape == tuple(src_shape):
        return gs
    return slice_scatter_zeros(gs, src_shape, tuple(slice(0, s) for s in index._data.shape))


class ScatterAddBackward0(Node):
    def backward(self, g):
        dim, index, src_shape = self.args
        return (g if self.needs(0) else None,
                _src_grad(g, dim, index, src_shape) if self.needs(1) else None)


def scatter_add(input, dim, index, src):
    d = wrap_dim(dim, input._data.ndim, "scatter_add")
    _check_index("scatter_add", input, d, index)
    ish = index._data.shape
    if any(i > s for i, s in zip(ish, src._data.shape)):
        raise RuntimeError(
            f"scatter_add(): Expected index {list(ish)} to be smaller than src {list(src._data.shape)}"
        )
    src_part = src._data[tuple(slice(0, s) for s in ish)]
    data = input._data.copy()
    array_module(data).add.at(data, _along_dim_index(index._data, d), src_part)
    return record(ScatterAddBackward0, data, (input, src), args=(d, index, src._data.shape))


class ScatterBackward0(Node):
    def backward(self, g):
        dim, index, src_shape = self.args
        gs = g.scatter(dim, index, 0.0) if self.needs(0) else None
        if src_shape is None:
            return gs
        return gs, (_src_grad(g, dim, index, src_shape) if self.needs(1) else None)


def scatter(input, dim, index, src=None, *, value=None):
    d = wrap_dim(dim, input._data.ndim, "scatter")
    _check_index("scatter", input, d, index)
    if src is None:
        src = value
    data = input._data.copy()
    key = _along_dim_index(index._data, d)
    if isinstance(src, Tensor):
        data[key] = src._data[tuple(slice(0, s) for s in index._data.shape)]
        return record(ScatterBackward0, data, (input, src), args=(d, index, src._data.shape))
    data[key] = src
    return record(ScatterBackward0, data, (input,), args=(d, index, None))


class IndexSelectBackward0(Node):
    def backward(self, g):
        shape, dim, index = self.args
        from .creation import zeros

        return index_add(zeros(shape, dtype=g.dtype, device=g.device), dim, index, g)


def index_select(input, dim, index):
    d = wrap_dim(dim, input._data.ndim, "index_select")
    if not isinstance(index, Tensor) or index._data.ndim > 1 or index._data.dtype.kind not in "iu":
        raise IndexError("index_select(): Index is supposed to be a vector of int64")
    idx = index._data.reshape(-1)
    try:
        data = array_module(input._data).take(input._data, idx, axis=d)
    except IndexError as e:
        raise IndexError(f"index_select(): {e}") from None
    return record(IndexSelectBackward0, data, (input,), args=(input._data.shape, d, index))


class IndexAddBackward0(Node):
    def backward(self, g):
        dim, index, alpha = self.args
        gs = g if self.needs(0) else None
        gv = g.index_select(dim, index) * alpha if self.needs(1) else None
        return gs, gv


def _add_rows_compiled(data, idx, src) -> bool:
    """``data[idx[i]] += src[i]`` along dim 0 by the compiled loop, where it applies
    (numpy float arrays of one dtype, C-contiguous; indices checked by the caller);
    False where not."""
    if not (type(data) is np.ndarray and type(src) is np.ndarray and data.dtype == src.dtype
            and data.dtype.kind == "f" and data.ndim >= 1 and data.flags.c_contiguous
            and src.shape == (idx.size,) + data.shape[1:] and idx.dtype.kind in "iu" and idx.size):
        return False
    jit = _jit_kernels.get()
    if jit is None:
        return False
    width = math.prod(data.shape[1:])
    jit["index_add_rows"](data.reshape(data.shape[0], width), idx,
                          np.ascontiguousarray(src).reshape(idx.size, width))
    return True


def index_add(input, dim, index, source, *, alpha=1):
    d = wrap_dim(dim, input._data.ndim, "index_add")
    data = input._data.copy()
    idx = index._data.reshape(-1)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index_add(): expected an integer index tensor (int64), got {index.dtype}")
    n = data.shape[d] if data.ndim else 1
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= n:   # as PyTorch: a negative index is an error, not wrapped
            raise IndexError(f"index_add(): index {lo if lo < 0 else hi} is out of bounds for "
                             f"dimension {d} with size {n}")
    src = source._data * alpha if alpha != 1 else source._data
    if d != 0 or not _add_rows_compiled(data, idx, src):
        array_module(data).add.at(data, (slice(None),) * d + (idx,), src)
    return record(IndexAddBackward0, data, (input, source), args=(d, index, alpha))


# ---------------------------------------------------------------- masking
class MaskedFillBackward0(Node):
    def backward(self, g):
        return g.masked_fill(self.args, 0.0)


def masked_fill(input, mask, value):
    if not isinstance(mask, Tensor) or mask._data.dtype.kind != "b":
        raise RuntimeError(
            f"masked_fill only supports boolean masks, but got mask with dtype "
            f"{mask.dtype if isinstance(mask, Tensor) else type(mask).__name__}"
        )
    xp = array_module(input._data)
    try:
        m = xp.broadcast_to(mask._data, input._data.shape)
    except ValueError:
        raise RuntimeError(
            f"masked_fill: the mask of shape {list(mask._data.shape)} cannot be broadcast to the "
            f"input's shape {list(input._data.shape)}"
        ) from None
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(
                "masked_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                f"{value._data.ndim} dimension(s)."
            )
        from .pointwise import where

        return where(_wrap(m), value.to(input.dtype), input)
    data = xp.where(m, xp.asarray(value, dtype=input._data.dtype), input._data)
    return record(MaskedFillBackward0, data, (input,), args=_wrap(m))


def masked_select(input, mask):
    xp = array_module(input._data)
    shape = xp.broadcast_shapes(input._data.shape, mask._data.shape)
    return getitem(input.expand(shape), mask.expand(shape))


class TrilBackward0(Node):
    def backward(self, g):
        return g.tril(self.args)


class TriuBackward0(Node):
    def backward(self, g):
        return g.triu(self.args)


def _check_2d(op, input):
    if input._data.ndim < 2:
        raise RuntimeError(f"{op}: input tensor must have at least 2 dimensions, got {input._data.ndim}")


def tril(input, diagonal=0):
    _check_2d("tril", input)
    return record(TrilBackward0, array_module(input._data).tril(input._data, diagonal), (input,), args=diagonal)


def triu(input, diagonal=0):
    _check_2d("triu", input)
    return record(TriuBackward0, array_module(input._data).triu(input._data, diagonal), (input,), args=diagonal)


def one_hot(tensor, num_classes=-1):
    x = tensor._data
    if x.dtype.kind not in "iu":
        raise RuntimeError("one_hot is only applicable to index tensor of type int64")
    xp = array_module(x)
    if x.size and x.min() < 0:
        raise RuntimeError("Class values must be non-negative.")
    if num_classes == -1:
        num_classes = int(x.max()) + 1 if x.size else 0
    elif x.size and x.max() >= num_classes:
        raise RuntimeError("Class values must be smaller than num_classes.")
    return _wrap((x[..., None] == xp.arange(num_classes)).astype(xp.int64))
