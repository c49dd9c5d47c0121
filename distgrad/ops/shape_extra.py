"""More of PyTorch's shape and indexing ops: roll, diagonal and friends, tril/triu
indices, meshgrid, diff, the split/stack variants, take, index_fill/index_copy,
masked_scatter, scatter_reduce, unique, bincount, searchsorted, kron, tensordot,
cross, cdist, block_diag, unfold, ... Most are built from differentiable ops (as in
PyTorch); those with a node of their own write their backward with tensor ops."""
from __future__ import annotations

import builtins
import itertools
import warnings

import numpy as np

from .. import dtype as _dt
from ..autograd.function import Node, as_view, record
from . import pointwise as _pw
from . import shape as _sh
from ._util import Tensor, _wrap, array_module, wrap_dim
from .math_extra import named


def _host(a):
    xp = array_module(a)
    return a if xp is np else xp.asnumpy(a)


def _zeros(shape, like):
    from .creation import zeros
    return zeros(tuple(shape), dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------- roll
class RollBackward0(Node):
    def backward(self, g):
        shifts, dims = self.args
        return roll(g, tuple(-s for s in shifts), dims)


def roll(input, shifts, dims=None):
    x = input._data
    xp = array_module(x)
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise RuntimeError(f"roll: dims must be given when shifts has {len(shifts)} elements")
        data = xp.roll(x.reshape(-1), shifts[0]).reshape(x.shape)
        out = record(RollBackward0, data, (input,), args=(shifts, None))
        return out
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise RuntimeError(f"shifts and dimensions must align. shifts: {len(shifts)}, dims:{len(dims)}")
    dims = tuple(wrap_dim(d, x.ndim, "roll") for d in dims)
    data = xp.roll(x, shifts, dims) if x.ndim else x.copy()
    return record(RollBackward0, data, (input,), args=(shifts, dims))


def rot90(input, k=1, dims=(0, 1)):
    dims = list(dims)
    if len(dims) != 2:
        raise RuntimeError(f"expected total rotation dims == 2, but got dims = {len(dims)}")
    nd = input.dim()
    if nd < 2:
        raise RuntimeError(f"expected total dims >= 2, but got total dims = {nd}")
    d0, d1 = wrap_dim(dims[0], nd, "rot90"), wrap_dim(dims[1], nd, "rot90")
    if d0 == d1:
        raise RuntimeError(f"expected rotation dims to be different, but got dim0 = {d0} and dim1 = {d1}")
    k = k % 4
    if k == 1:
        out = input.flip(d1).transpose(d0, d1)
    elif k == 2:
        out = input.flip((d0, d1))
    elif k == 3:
        out = input.flip(d0).transpose(d0, d1)
    else:
        out = input.clone()
    return named(out.contiguous(), "Rot90Backward0")


def tile(input, dims):
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(dims) < input.dim():
        dims = (1,) * (input.dim() - len(dims)) + dims
    return input.repeat(*dims)


def repeat_interleave(input, repeats=None, dim=None, *, output_size=None):
    """Each element repeated ``repeats`` times (an int or a tensor of counts) along ``dim``
    (the flattened input when None); ``repeat_interleave(counts)`` gives the indices."""
    if repeats is None:
        counts = input
        xp = array_module(counts._data)
        return _wrap(xp.repeat(xp.arange(counts._data.shape[0]), counts._data).astype(np.int64))
    if dim is None:
        input = input.reshape(-1)
        d = 0
    else:
        d = wrap_dim(dim, input.dim(), "repeat_interleave")
    n = input.shape[d] if input.dim() else 1
    xp = array_module(input._data)
    if isinstance(repeats, Tensor):
        r = repeats._data.reshape(-1)
        if r.size == 1:
            r = xp.full(n, int(r[0]), np.int64)
        elif r.size != n:
            raise RuntimeError("repeats must have the same size as input along dim")
        if bool((r < 0).any()):
            raise RuntimeError("repeats can not be negative")
    else:
        if repeats < 0:
            raise RuntimeError("repeats can not be negative")
        r = xp.full(n, int(repeats), np.int64)
    idx = _wrap(xp.repeat(xp.arange(n), r).astype(np.int64))
    if input.dim() == 0:
        input = input.reshape(1)
    return input.index_select(d, idx)


# -------------------------------------------------------------------- diagonals
class DiagonalBackward0(Node):
    def backward(self, g):
        shape, offset, d1, d2 = self.args
        z = _zeros(shape, g)
        diagonal(z, offset, d1, d2).copy_(g)
        return z


def _diag_view(x, offset, d1, d2):
    """The diagonal of array ``x`` as a writable strided view (on the last axis)."""
    xp = array_module(x)
    n1, n2 = x.shape[d1], x.shape[d2]
    if offset >= 0:
        length = builtins.max(0, builtins.min(n1, n2 - offset))
        key = tuple(slice(offset, None) if i == d2 else slice(None) for i in range(x.ndim))
    else:
        length = builtins.max(0, builtins.min(n1 + offset, n2))
        key = tuple(slice(-offset, None) if i == d1 else slice(None) for i in range(x.ndim))
    rest = [i for i in range(x.ndim) if i not in (d1, d2)]
    shape = tuple(x.shape[i] for i in rest) + (length,)
    strides = tuple(x.strides[i] for i in rest) + (x.strides[d1] + x.strides[d2],)
    if length == 0 or x.size == 0:
        return xp.zeros(shape, x.dtype)
    return xp.lib.stride_tricks.as_strided(x[key], shape, strides)


def diagonal(input, offset=0, dim1=0, dim2=1):
    x = input._data
    nd = x.ndim
    d1, d2 = wrap_dim(dim1, nd, "diagonal"), wrap_dim(dim2, nd, "diagonal")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    data = _diag_view(x, offset, d1, d2)
    out = record(DiagonalBackward0, data, (input,), args=(x.shape, offset, d1, d2))
    return as_view(input, out, lambda b: diagonal(b, offset, d1, d2))


class DiagEmbedBackward0(Node):
    def backward(self, g):
        offset, d1, d2 = self.args
        return diagonal(g, offset, d1, d2)


def diag_embed(input, offset=0, dim1=-2, dim2=-1):
    x = input._data
    nd = x.ndim + 1
    d1, d2 = wrap_dim(dim1, nd, "diag_embed"), wrap_dim(dim2, nd, "diag_embed")
    if d1 == d2:
        raise RuntimeError(f"diagonal dimensions cannot be identical {dim1}, {dim2}")
    n = x.shape[-1] + builtins.abs(offset) if x.ndim else 1 + builtins.abs(offset)
    rest = list(x.shape[:-1])
    shape = []
    it = iter(rest)
    for i in range(nd):
        shape.append(n if i in (d1, d2) else next(it))
    xp = array_module(x)
    data = xp.zeros(shape, x.dtype)
    _diag_view(data, offset, d1, d2)[...] = x
    return record(DiagEmbedBackward0, data, (input,), args=(offset, d1, d2))


def diag(input, diagonal=0):
    nd = input.dim()
    if nd == 1:
        return diag_embed(input, diagonal, 0, 1)
    if nd == 2:
        return _diag_copy(input, diagonal)
    raise RuntimeError("diag(): Supports 1D or 2D tensors. Got " + f"{nd}D")


def _diag_copy(input, offset):
    out = diagonal(input, offset, 0, 1)
    data = out._data.copy()
    return record(DiagonalBackward0, data, (input,), args=(input._data.shape, offset, 0, 1))


def diagflat(input, offset=0):
    return diag_embed(input.reshape(-1), offset, 0, 1)


class TraceBackward0(Node):
    def backward(self, g):
        shape = self.args
        from .creation import eye
        return eye(shape[0], shape[1], dtype=g.dtype, device=g.device) * g


def trace(input):
    x = input._data
    if x.ndim != 2:
        raise RuntimeError(f"trace: expected a matrix, but got tensor with dim {x.ndim}")
    xp = array_module(x)
    data = xp.asarray(xp.trace(x))
    if x.dtype.kind in "biu":
        data = data.astype(np.int64)
    return record(TraceBackward0, data, (input,), args=x.shape)


def _tri_indices(row, col, offset, upper, dtype, device):
    from .creation import tensor
    r, c = np.triu_indices(row, offset, col) if upper else np.tril_indices(row, offset, col)
    return tensor(np.stack([r, c]).astype(np.int64), dtype=dtype or _dt.int64, device=device)


def tril_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    return _tri_indices(row, col, offset, False, dtype, device)


def triu_indices(row, col, offset=0, *, dtype=None, device=None, layout=None):
    return _tri_indices(row, col, offset, True, dtype, device)


# ------------------------------------------------------------------ combining
def _tensors_arg(tensors):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        return list(tensors[0])
    return list(tensors)


def meshgrid(*tensors, indexing=None):
    ts = _tensors_arg(tensors)
    if indexing is None:
        warnings.warn(
            "torch.meshgrid: in an upcoming release, it will be required to pass the indexing "
            "argument.", UserWarning, stacklevel=2)
        indexing = "ij"
    if indexing not in ("ij", "xy"):
        raise RuntimeError(f"torch.meshgrid: indexing must be one of \"xy\" or \"ij\", but received: {indexing}")
    for t in ts:
        if t.dim() > 1:
            raise RuntimeError(f"torch.meshgrid: Expected 0D or 1D tensor in the tensor list but got: {t.dim()}D")
    ts = [t.reshape(-1) for t in ts]
    swap = indexing == "xy" and len(ts) >= 2
    if swap:
        ts[0], ts[1] = ts[1], ts[0]
    shape = [t.shape[0] for t in ts]
    n = len(ts)
    out = []
    for i, t in enumerate(ts):
        v = t.view([-1 if j == i else 1 for j in range(n)])
        out.append(v.expand(shape))
    if swap:
        out[0], out[1] = out[1], out[0]
    return tuple(out)


def diff(input, n=1, dim=-1, prepend=None, append=None):
    if input.dim() == 0:
        raise RuntimeError("diff expects input to be at least one-dimensional")
    d = wrap_dim(dim, input.dim(), "diff")
    parts = []
    for extra in (prepend, input, append):
        if extra is None:
            continue
        if not isinstance(extra, Tensor):
            extra = _wrap(array_module(input._data).asarray(extra, input._data.dtype))
        if extra.dim() == 0:
            shape = list(input.shape)
            shape[d] = 1
            extra = extra.expand(shape)
        parts.append(extra)
    x = _sh.cat(parts, d) if len(parts) > 1 else input
    for _ in range(n):
        m = x.shape[d]
        if m == 0:
            break
        if x.dtype == _dt.bool:
            x = _pw.logical_xor(x.narrow(d, 1, m - 1), x.narrow(d, 0, m - 1))
        else:
            x = x.narrow(d, 1, m - 1) - x.narrow(d, 0, m - 1)
    return x


def fliplr(input):
    if input.dim() < 2:
        raise RuntimeError("Input must be >= 2-d.")
    return input.flip(1)


def flipud(input):
    if input.dim() < 1:
        raise RuntimeError("Input must be >= 1-d.")
    return input.flip(0)


def ravel(input):
    return input.reshape(-1)


def moveaxis(input, source, destination):
    return _sh.movedim(input, source, destination)


def swapdims(input, dim0, dim1):
    return _sh.transpose(input, dim0, dim1)


def _atleast(nd, tensors):
    ts = _tensors_arg(tensors) if not (len(tensors) == 1 and isinstance(tensors[0], Tensor)) else [tensors[0]]
    out = []
    for t in ts:
        if t.dim() >= nd:
            out.append(t)
        elif nd == 1 or t.dim() == 0:
            out.append(t.reshape((1,) * nd))
        elif nd == 2:
            out.append(t.unsqueeze(0))
        else:  # nd == 3
            out.append(t.unsqueeze(0).unsqueeze(-1) if t.dim() == 1 else t.unsqueeze(-1))
    if len(tensors) == 1 and isinstance(tensors[0], Tensor):
        return out[0]
    return tuple(out)


def atleast_1d(*tensors):
    return _atleast(1, tensors)


def atleast_2d(*tensors):
    return _atleast(2, tensors)


def atleast_3d(*tensors):
    return _atleast(3, tensors)


def column_stack(tensors):
    ts = [t.reshape(-1, 1) if t.dim() <= 1 else t for t in tensors]
    return _sh.cat(ts, 1)


def dstack(tensors):
    return _sh.cat(list(atleast_3d(*tensors)) if len(tensors) > 1 else [atleast_3d(tensors[0])], 2)


def tensor_split(input, indices_or_sections, dim=0):
    d = wrap_dim(dim, input.dim(), "tensor_split")
    n = input.shape[d]
    if isinstance(indices_or_sections, Tensor):
        v = _host(indices_or_sections._data)
        indices_or_sections = int(v) if v.ndim == 0 else [int(i) for i in v]
    if isinstance(indices_or_sections, int):
        k = indices_or_sections
        if k <= 0:
            raise RuntimeError(f"number of sections must be larger than 0, got {k}")
        q, r = divmod(n, k)
        bounds, start = [], 0
        for i in range(k):
            size = q + (1 if i < r else 0)
            bounds.append((start, start + size))
            start += size
    else:
        idx = [builtins.min(builtins.max(i + n if i < 0 else i, 0), n) for i in indices_or_sections]
        edges = [0] + idx + [n]
        bounds = [(a, builtins.max(a, b)) for a, b in zip(edges[:-1], edges[1:])]
    return tuple(input.narrow(d, a, b - a) for a, b in bounds)


def _split_dim(name, input, sections, dim, min_dim):
    if input.dim() < min_dim:
        raise RuntimeError(
            f"torch.{name} requires a tensor with at least {min_dim} dimension, but got a tensor "
            f"with {input.dim()} dimensions!")
    if isinstance(sections, int) and input.shape[dim] % sections:
        raise RuntimeError(
            f"torch.{name} attempted to split along dimension {dim}, but the size of the dimension "
            f"{input.shape[dim]} is not divisible by the split_size {sections}!")
    return tensor_split(input, sections, dim)


def hsplit(input, indices_or_sections):
    return _split_dim("hsplit", input, indices_or_sections, 1 if input.dim() > 1 else 0, 1)


def vsplit(input, indices_or_sections):
    return _split_dim("vsplit", input, indices_or_sections, 0, 2)


def dsplit(input, indices_or_sections):
    return _split_dim("dsplit", input, indices_or_sections, 2, 3)


# ------------------------------------------------------------------- indexing
def take(input, index):
    return named(input.reshape(-1)[index], "TakeBackward0")


def take_along_dim(input, indices, dim=None):
    if dim is None:
        return input.reshape(-1).gather(0, indices.reshape(-1))
    d = wrap_dim(dim, input.dim(), "take_along_dim")
    shape_i = list(indices.shape)
    shape_x = list(input.shape)
    shape_i[d] = shape_x[d] = 1
    b = list(_np_broadcast(shape_i, shape_x))
    bi, bx = list(b), list(b)
    bi[d], bx[d] = indices.shape[d], input.shape[d]
    return input.expand(bx).gather(d, indices.expand(bi))


def _np_broadcast(a, b):
    return np.broadcast_shapes(tuple(a), tuple(b))


class IndexFillBackward0(Node):
    def backward(self, g):
        d, index = self.args
        gs = g.index_fill(d, index, 0) if self.needs(0) else None
        if len(self.next_functions) == 1:
            return gs
        gv = None
        if self.needs(1):
            u = _wrap(array_module(index._data).unique(index._data.reshape(-1)))
            gv = g.index_select(d, u).sum()
        return gs, gv


class IndexFillBackward1(IndexFillBackward0):
    pass


def index_fill(input, dim, index, value):
    x = input._data
    d = wrap_dim(dim, x.ndim, "index_fill") if x.ndim else 0
    if not isinstance(index, Tensor) or index._data.dtype.kind not in "iu" or index._data.ndim > 1:
        raise IndexError("index_fill_(): Expected a long tensor for index, and a 1-D index")
    data = x.copy()
    key = (slice(None),) * d + (index._data.reshape(-1),) if x.ndim else ...
    if isinstance(value, Tensor):
        if value._data.ndim:
            raise RuntimeError(
                f"index_fill_ only supports a 0-dimensional value tensor, but got tensor with "
                f"{value._data.ndim} dimension(s).")
        data[key] = value._data
        return record(IndexFillBackward1, data, (input, value), args=(d, index))
    data[key] = value
    return record(IndexFillBackward0, data, (input,), args=(d, index))


class IndexCopyBackward0(Node):
    def backward(self, g):
        d, index = self.args
        return (g.index_fill(d, index, 0) if self.needs(0) else None,
                g.index_select(d, index) if self.needs(1) else None)


def index_copy(input, dim, index, source):
    x = input._data
    d = wrap_dim(dim, x.ndim, "index_copy")
    if not isinstance(index, Tensor) or index._data.dtype.kind not in "iu":
        raise IndexError("index_copy_(): Expected a long tensor for index")
    if source.dtype != input.dtype:
        raise RuntimeError(
            f"index_copy_(): self and source expected to have the same dtype, but got (self) "
            f"{str(input.dtype).replace('distgrad', 'torch').split('.')[-1].capitalize()} and (source) "
            f"{str(source.dtype).split('.')[-1].capitalize()}")
    data = x.copy()
    xp = array_module(x)
    key = (slice(None),) * d + (index._data.reshape(-1),)
    data[key] = source._data if source._data.ndim == x.ndim else xp.expand_dims(source._data, d)
    return record(IndexCopyBackward0, data, (input, source), args=(d, index))


class MaskedScatterBackward0(Node):
    def backward(self, g):
        mask, src_shape = self.args
        gs = g.masked_fill(mask, 0.0) if self.needs(0) else None
        gv = None
        if self.needs(1):
            sel = g.masked_select(mask)
            n = 1
            for s in src_shape:
                n *= s
            k = sel.shape[0]
            if k < n:
                sel = _sh.cat([sel, _zeros((n - k,), g)])
            gv = sel.reshape(src_shape)
        return gs, gv


def masked_scatter(input, mask, source):
    if mask._data.dtype.kind != "b":
        raise RuntimeError("masked_scatter_ only supports boolean masks, but got mask with dtype "
                           f"{mask.dtype}")
    x = input._data
    xp = array_module(x)
    m = xp.broadcast_to(mask._data, x.shape)
    k = int(m.sum())
    if k > source._data.size:
        raise RuntimeError("masked_scatter: expected source to have at least as many elements as "
                           "ones in mask")
    data = x.copy()
    data[m] = source._data.reshape(-1)[:k]
    return record(MaskedScatterBackward0, data, (input, source), args=(_wrap(xp.ascontiguousarray(m)), source._data.shape))


_REDUCES = ("sum", "prod", "mean", "amax", "amin")


class ScatterReduceBackward0(Node):
    def backward(self, g):
        x, src, out = self.saved_tensors
        d, index, reduce, include_self = self.args
        xp = array_module(g._data)
        hit = _wrap(xp.zeros(x.shape, bool))
        hit._data[_along(index._data, d)] = True
        gx = gs = None
        if reduce == "sum":
            gx = g if include_self else g.masked_fill(hit, 0.0)
            gs = g.gather(d, index)
        elif reduce == "mean":
            cnt = _count(x, d, index, include_self)
            gx = (g / cnt) if include_self else g.masked_fill(hit, 0.0)
            if include_self:
                gx = _pw.where(hit, g / cnt, g)
            gs = (g / cnt).gather(d, index)
        elif reduce == "prod":
            # Products of the others, without dividing (zeros are fine): out / value where
            # the value is nonzero; recomputed by a product of the others otherwise.
            gx = g * out / x if include_self else g.masked_fill(hit, 0.0)
            if include_self:
                gx = _pw.where(hit, g * out / x, g)
            gs = (g * out).gather(d, index) / src
        else:  # amax / amin: shared evenly among the values equal to the result
            outg = out.gather(d, index)
            src_eq = (src == outg).to(g.dtype)
            x_eq = (x == out).to(g.dtype) if include_self else _zeros(x.shape, g)
            cnt = x_eq.scatter_add(d, index, src_eq)
            gx = _pw.where(hit, g * x_eq / cnt, g) if include_self else g.masked_fill(hit, 0.0)
            gs = (g / cnt).gather(d, index) * src_eq
        return (gx if self.needs(0) else None, gs if self.needs(1) else None)


def _along(index, d):
    from .indexing import _along_dim_index
    return _along_dim_index(index, d)


def _count(x, d, index, include_self):
    ones = _wrap(array_module(x._data).ones(index._data.shape, x._data.dtype))
    base = _wrap(array_module(x._data).full(x._data.shape, 1.0 if include_self else 0.0, x._data.dtype))
    c = base.scatter_add(d, index, ones)
    return _pw.where(c == 0, 1.0, c)


def scatter_reduce(input, dim, index, src, reduce, *, include_self=True):
    if reduce not in _REDUCES:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    from .indexing import _check_index
    x = input._data
    d = wrap_dim(dim, x.ndim, "scatter_reduce")
    _check_index("scatter_reduce", input, d, index)
    xp = array_module(x)
    key = _along(index._data, d)
    s = src._data[tuple(slice(0, n) for n in index._data.shape)]
    ufunc = {"sum": xp.add, "mean": xp.add, "prod": xp.multiply, "amax": xp.maximum, "amin": xp.minimum}[reduce]
    data = x.copy()
    if not include_self:
        hit = xp.zeros(x.shape, bool)
        hit[key] = True
        ident = {"sum": 0, "mean": 0, "prod": 1}.get(reduce)
        if ident is None:
            fill = s.min() if reduce == "amax" else s.max()
            # start from a value that loses to every source value
            fill = (-xp.inf if reduce == "amax" else xp.inf) if _dt.kind_of(x.dtype) == "f" else fill
            data[hit] = fill
        else:
            data[hit] = ident
    ufunc.at(data, key, s)
    if reduce == "mean":
        cnt = xp.full(x.shape, 1 if include_self else 0, np.int64)
        xp.add.at(cnt, key, 1)
        cnt = xp.maximum(cnt, 1)
        data = (data / cnt).astype(x.dtype) if _dt.kind_of(x.dtype) == "f" else data // cnt
    return record(ScatterReduceBackward0, data, (input, src), (input, src, _OUT_MARK()),
                  args=(d, index, reduce, include_self))


def _OUT_MARK():
    from ..autograd.function import OUTPUT
    return OUTPUT


# ------------------------------------------------------------- non-differentiable
def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    x = input._data
    xp = array_module(x)
    if dim is None:
        u, inv, cnt = xp.unique(x.reshape(-1), return_inverse=True, return_counts=True)
        inv = inv.reshape(x.shape)
    else:
        d = wrap_dim(dim, x.ndim, "unique")
        u, inv, cnt = xp.unique(x, return_inverse=True, return_counts=True, axis=d)
        inv = inv.reshape(-1)
    res = [_wrap(xp.ascontiguousarray(u))]
    if return_inverse:
        res.append(_wrap(inv.astype(np.int64)))
    if return_counts:
        res.append(_wrap(cnt.astype(np.int64)))
    return res[0] if len(res) == 1 else tuple(res)


def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    x = input._data
    xp = array_module(x)
    if dim is None:
        flat = x.reshape(-1)
        change = xp.ones(flat.shape[0], bool)
        if flat.shape[0] > 1:
            change[1:] = flat[1:] != flat[:-1]
        u = flat[change]
        inv = (xp.cumsum(change) - 1).reshape(x.shape)
    else:
        d = wrap_dim(dim, x.ndim, "unique_consecutive")
        xm = xp.moveaxis(x, d, 0).reshape(x.shape[d], -1)
        change = xp.ones(xm.shape[0], bool)
        if xm.shape[0] > 1:
            change[1:] = (xm[1:] != xm[:-1]).any(1)
        u = xp.moveaxis(xp.moveaxis(x, d, 0)[change], 0, d)
        inv = xp.cumsum(change) - 1
    starts = xp.nonzero(change)[0]
    cnt = xp.diff(xp.concatenate([starts, xp.asarray([change.shape[0]])]))
    res = [_wrap(xp.ascontiguousarray(u))]
    if return_inverse:
        res.append(_wrap(inv.astype(np.int64)))
    if return_counts:
        res.append(_wrap(cnt.astype(np.int64)))
    return res[0] if len(res) == 1 else tuple(res)


def bincount(input, weights=None, minlength=0):
    x = input._data
    if x.ndim != 1 or x.dtype.kind not in "iu":
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    xp = array_module(x)
    if x.size and int(x.min()) < 0:
        raise RuntimeError("bincount only supports 1-d non-negative integral inputs.")
    if weights is None:
        return _wrap(xp.bincount(x, minlength=minlength).astype(np.int64))
    w = weights._data
    dt = w.dtype if _dt.kind_of(w.dtype) == "f" and w.dtype == np.float32 else np.float64
    return _wrap(xp.bincount(x, weights=w, minlength=minlength).astype(dt))


def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None):
    if side is not None:
        if side not in ("left", "right"):
            raise RuntimeError(f"side can only be 'left' or 'right' but got {side}")
        if right and side == "left":
            raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, got "
                               "side of left while right was True")
        right = side == "right"
    seq = sorted_sequence._data
    xp = array_module(seq)
    scalar = not isinstance(input, Tensor)
    vals = xp.asarray(input) if scalar else input._data
    if sorter is not None:
        seq = xp.take_along_axis(seq, sorter._data, -1)
    s = "right" if right else "left"
    if seq.ndim == 1:
        out = xp.searchsorted(seq, vals, side=s)
    else:
        if seq.shape[:-1] != vals.shape[:-1]:
            raise RuntimeError(
                "torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 "
                "dimensions of boundaries tensor and input value tensor must match, but we got "
                f"boundaries tensor {list(seq.shape)} and input value tensor {list(vals.shape)}")
        s2 = seq.reshape(-1, seq.shape[-1])
        v2 = vals.reshape(-1, vals.shape[-1])
        out = xp.stack([xp.searchsorted(a, b, side=s) for a, b in zip(s2, v2)]).reshape(vals.shape)
    return _wrap(xp.asarray(out).astype(np.int32 if out_int32 else np.int64))


def bucketize(input, boundaries, *, out_int32=False, right=False):
    if boundaries.dim() != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.dim()})")
    return searchsorted(boundaries, input, out_int32=out_int32, right=right)


def isin(elements, test_elements, *, assume_unique=False, invert=False):
    e = elements._data if isinstance(elements, Tensor) else None
    t = test_elements._data if isinstance(test_elements, Tensor) else None
    xp = array_module(e if e is not None else t)
    if e is None:
        e = xp.asarray(elements)
    if t is None:
        t = xp.asarray(test_elements)
    return _wrap(xp.asarray(xp.isin(e, t, assume_unique=assume_unique, invert=invert)))


def unravel_index(indices, shape):
    if isinstance(shape, int):
        shape = (shape,)
    idx = indices._data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"expected 'indices' to be integer dtype, but got {_dt.from_numpy_dtype(idx.dtype)}")
    xp = array_module(idx)
    n = int(np.prod(shape))
    if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
        raise RuntimeError(f"'indices' must be in range [-{n}, {n - 1}]")
    idx = xp.where(idx < 0, idx + n, idx)
    return tuple(_wrap(a.astype(np.int64)) for a in xp.unravel_index(idx, tuple(shape)))


# ------------------------------------------------------------------ products
def tensordot(a, b, dims=2, out=None):
    if isinstance(dims, int):
        da = list(range(a.dim() - dims, a.dim()))
        db = list(range(dims))
    elif isinstance(dims, Tensor):
        v = _host(dims._data)
        if v.ndim == 0:
            return tensordot(a, b, int(v))
        da, db = [int(i) for i in v[0]], [int(i) for i in v[1]]
    else:
        da, db = dims
        da = [da] if isinstance(da, int) else list(da)
        db = [db] if isinstance(db, int) else list(db)
    da = [wrap_dim(d, a.dim(), "tensordot") for d in da]
    db = [wrap_dim(d, b.dim(), "tensordot") for d in db]
    for i, j in zip(da, db):
        if a.shape[i] != b.shape[j]:
            raise RuntimeError(
                f"contracted dimensions need to match, but first has size {a.shape[i]} in dim {i} "
                f"and second has size {b.shape[j]} in dim {j}")
    fa = [d for d in range(a.dim()) if d not in da]
    fb = [d for d in range(b.dim()) if d not in db]
    k = int(np.prod([a.shape[d] for d in da]))
    ma = a.permute(fa + da).reshape(-1, k)
    mb = b.permute(db + fb).reshape(k, -1)
    return (ma @ mb).reshape([a.shape[d] for d in fa] + [b.shape[d] for d in fb])


def inner(input, other):
    if input.dim() == 0 or other.dim() == 0:
        return input * other
    return tensordot(input, other, ([-1], [-1]))


def vdot(input, other):
    from .linalg import dot
    return dot(input, other)


def kron(input, other):
    nd = builtins.max(input.dim(), other.dim())
    a = input.reshape((1,) * (nd - input.dim()) + tuple(input.shape))
    b = other.reshape((1,) * (nd - other.dim()) + tuple(other.shape))
    ia = [x for d in range(nd) for x in (a.shape[d], 1)]
    ib = [x for d in range(nd) for x in (1, b.shape[d])]
    out = a.reshape(ia) * b.reshape(ib)
    return out.reshape([a.shape[d] * b.shape[d] for d in range(nd)])


def cross(input, other, dim=None):
    if dim is None:
        b = _np_broadcast(input.shape, other.shape)
        dims = [i for i, s in enumerate(b) if s == 3]
        if not dims:
            raise RuntimeError("no dimension of size 3 in input")
        warnings.warn(
            "Using torch.cross without specifying the dim arg is deprecated.\nPlease either pass "
            "the dim explicitly or simply use torch.linalg.cross.\nThe default value of dim will "
            "change to agree with that of linalg.cross in a future release.", UserWarning, stacklevel=2)
        dim = dims[0]
    return linalg_cross(input, other, dim=dim)


def linalg_cross(input, other, *, dim=-1):
    if input.dim() != other.dim():
        raise RuntimeError(
            "linalg.cross: inputs must have the same number of dimensions.")
    b = _np_broadcast(input.shape, other.shape)
    d = wrap_dim(dim, len(b), "cross")
    if input.shape[d] != 3 or other.shape[d] != 3:
        raise RuntimeError(
            f"linalg.cross: inputs dimension {dim} must have length 3. Got {input.shape[d]} and "
            f"{other.shape[d]}")
    a1, a2, a3 = input.unbind(d)
    b1, b2, b3 = other.unbind(d)
    out = _sh.stack([a2 * b3 - a3 * b2, a3 * b1 - a1 * b3, a1 * b2 - a2 * b1], d)
    return named(out, "LinalgCrossBackward0")


def cdist(x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    if x1.dim() < 2 or x2.dim() < 2:
        raise RuntimeError(f"cdist only supports at least 2D tensors, X1 got: {x1.dim()}D")
    if x1.shape[-1] != x2.shape[-1]:
        raise RuntimeError(
            f"X1 and X2 must have the same number of columns. X1: {x1.shape[-1]} X2: {x2.shape[-1]}")
    if p < 0:
        raise RuntimeError("cdist only supports non-negative p values")
    d = x1.unsqueeze(-2) - x2.unsqueeze(-3)
    from .reduction import norm
    if p == 0:
        out = (d != 0).to(x1.dtype).sum(-1)
    else:
        out = norm(d, p=p, dim=-1)
    return named(out, "CdistBackward0")


def block_diag(*tensors):
    ts = []
    for t in tensors:
        if t.dim() > 2:
            raise RuntimeError(f"torch.block_diag: Input tensors must have 2 or fewer dimensions. Input {len(ts)} has {t.dim()} dimensions")
        ts.append(t.reshape(1, -1) if t.dim() == 1 else t.reshape(1, 1) if t.dim() == 0 else t)
    if not ts:
        return _wrap(np.zeros((1, 0), np.float32))
    dt = ts[0]._data.dtype
    for t in ts[1:]:
        dt = _pw._promote_types(np, dt, t._data.dtype)
    ncols = builtins.sum(t.shape[1] for t in ts)
    rows, c = [], 0
    from .shape import pad
    for t in ts:
        t = t.to(_dt.from_numpy_dtype(np.dtype(dt)))
        rows.append(pad(t, (c, ncols - c - t.shape[1])))
        c += t.shape[1]
    return named(_sh.cat(rows, 0), "BlockDiagBackward0")


def cartesian_prod(*tensors):
    if len(tensors) == 1:
        return tensors[0]
    grids = meshgrid(*tensors, indexing="ij")
    return _sh.stack([g.reshape(-1) for g in grids], 1)


def combinations(input, r=2, with_replacement=False):
    if input.dim() != 1:
        raise RuntimeError(f"Expect a 1D vector, but got shape {list(input.shape)}")
    n = input.shape[0]
    gen = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    combos = list(gen(range(n), r))
    if not combos:
        return _zeros((0,) if r == 0 else (0, r), input)
    idx = _wrap(array_module(input._data).asarray(np.asarray(combos, np.int64).T.copy()))
    return _sh.stack([input.index_select(0, idx[i]) for i in range(r)], 1)


def vander(x, N=None, increasing=False):
    if x.dim() != 1:
        raise RuntimeError("x must be a one-dimensional tensor.")
    n = x.shape[0] if N is None else N
    if n < 0:
        raise RuntimeError("N must be non-negative.")
    if x._data.dtype.kind in "bu":
        x = x.to(_dt.int64)
    if n == 0:
        return _zeros((x.shape[0], 0), x)
    from .math_extra import cumprod
    ones = _wrap(array_module(x._data).ones((x.shape[0], 1), x._data.dtype))
    if n > 1:
        powers = cumprod(x.unsqueeze(1).expand(x.shape[0], n - 1), 1)
        out = _sh.cat([ones, powers], 1)
    else:
        out = ones
    return out if increasing else out.flip(1)


# -------------------------------------------------------------------- unfold
class UnfoldBackward0(Node):
    def backward(self, g):
        shape, d, size, step = self.args
        nwin = g.shape[d]
        xp = array_module(g._data)
        idx = (xp.arange(nwin)[:, None] * step + xp.arange(size)[None, :]).reshape(-1)
        gm = g.movedim(-1, d + 1)                       # [..., nwin, size, ...]
        gm = gm.reshape(tuple(gm.shape[:d]) + (nwin * size,) + tuple(gm.shape[d + 2:]))
        return _zeros(shape, g).index_add(d, _wrap(idx.astype(np.int64)), gm)


def unfold(input, dimension, size, step):
    x = input._data
    nd = x.ndim
    d = wrap_dim(dimension, builtins.max(nd, 1), "unfold")
    n = x.shape[d] if nd else 1
    if size > n:
        raise RuntimeError(f"maximum size for tensor at dimension {d} is {n} but size is {size}")
    if step <= 0:
        raise RuntimeError(f"step is {step} but must be > 0")
    xp = array_module(x)
    if nd == 0:
        data = x.reshape(1)
        return record(UnfoldBackward0, data.copy(), (input,), args=((), 0, size, step))
    nwin = (n - size) // step + 1
    shape = x.shape[:d] + (nwin,) + x.shape[d + 1:] + (size,)
    strides = x.strides[:d] + (x.strides[d] * step,) + x.strides[d + 1:] + (x.strides[d],)
    data = xp.lib.stride_tricks.as_strided(x, shape, strides)
    out = record(UnfoldBackward0, data, (input,), args=(x.shape, d, size, step))
    return as_view(input, out, lambda b: unfold(b, d, size, step))
