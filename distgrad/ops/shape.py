"""Shape ops. Views (view, reshape, transpose, permute, squeeze, unsqueeze, expand,
narrow, ...) share memory and the version counter with their input; cat, stack,
flip, clone and casts make new memory."""
from __future__ import annotations

import numpy as np

from .. import dtype as _dt
from ..autograd.function import Node, as_view, record, record_multi
from ..autograd.grad_mode import state as _grad_state
from .. import backend
from ..backend import device as _device
from ._util import Tensor, _wrap, array_module, device_error, dims_arg, wrap_dim


def _shape_args(shape, op):
    if len(shape) == 1 and not isinstance(shape[0], int):
        shape = tuple(shape[0])
    shape = tuple(int(s) for s in shape)
    if sum(s == -1 for s in shape) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred (got shape {list(shape)})")
    return shape


def _infer_shape(shape, numel, op):
    if -1 in shape:
        rest = 1
        for s in shape:
            if s != -1:
                rest *= s
        if rest == 0 or numel % rest:
            raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size {numel}")
        shape = tuple(numel // rest if s == -1 else s for s in shape)
    n = 1
    for s in shape:
        if s < 0:
            raise RuntimeError(f"{op}: invalid shape dimension {s} in {list(shape)}")
        n *= s
    if n != numel:
        raise RuntimeError(f"{op}: shape '{list(shape)}' is invalid for input of size {numel}")
    return shape


# -------------------------------------------------------------- view/reshape
class ViewBackward0(Node):
    def backward(self, g):
        return g.reshape(self.args)


class UnsafeViewBackward0(ViewBackward0):
    pass


def view(input, *shape):
    if len(shape) == 1 and isinstance(shape[0], (_dt.dtype, str)):
        raise NotImplementedError("view(dtype) is not supported; use .to(dtype)")
    x = input._data
    shape = _infer_shape(_shape_args(shape, "view"), x.size, "view")
    try:
        data = backend.reshape_view(x, shape)
    except ValueError:
        raise RuntimeError(
            f"view size is not compatible with input tensor's size and stride (at least one "
            f"dimension spans across two contiguous subspaces): input shape {list(x.shape)}, "
            f"requested {list(shape)}. Use .reshape(...) instead."
        ) from None
    out = record(ViewBackward0, data, (input,), args=x.shape)
    return as_view(input, out, lambda b: b.view(shape))


def reshape(input, *shape):
    x = input._data
    shape = _infer_shape(_shape_args(shape, "reshape"), x.size, "reshape")
    xp = array_module(x)
    try:
        data = backend.reshape_view(x, shape)
    except ValueError:
        # Not expressible as a view: a copy, as PyTorch does.
        return record(UnsafeViewBackward0, xp.reshape(x, shape), (input,), args=x.shape)
    out = record(ViewBackward0, data, (input,), args=x.shape)
    return as_view(input, out, lambda b: b.reshape(shape))


def view_as(input, other):
    return view(input, other._data.shape)


def reshape_as(input, other):
    return reshape(input, other._data.shape)


def flatten(input, start_dim=0, end_dim=-1):
    shape = input._data.shape
    if not shape:
        return reshape(input, (1,))
    s = wrap_dim(start_dim, len(shape), "flatten")
    e = wrap_dim(end_dim, len(shape), "flatten")
    if s > e:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    if s == e:
        return input
    n = 1
    for d in shape[s:e + 1]:
        n *= d
    return reshape(input, shape[:s] + (n,) + shape[e + 1:])


def unflatten(input, dim, sizes):
    shape = input._data.shape
    d = wrap_dim(dim, len(shape), "unflatten")
    sizes = _infer_shape(tuple(sizes), shape[d], "unflatten")
    return view(input, shape[:d] + tuple(sizes) + shape[d + 1:])


# ------------------------------------------------------- transpose / permute
class TransposeBackward0(Node):
    def backward(self, g):
        d0, d1 = self.args
        return g.transpose(d0, d1)


def transpose(input, dim0, dim1):
    nd = input._data.ndim
    d0 = wrap_dim(dim0, nd, "transpose")
    d1 = wrap_dim(dim1, nd, "transpose")
    data = array_module(input._data).swapaxes(input._data, d0, d1) if nd else input._data.view()
    out = record(TransposeBackward0, data, (input,), args=(d0, d1))
    return as_view(input, out, lambda b: b.transpose(d0, d1))


swapaxes = transpose


def t(input):
    nd = input._data.ndim
    if nd > 2:
        raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {nd}D")
    return transpose(input, 0, 1) if nd == 2 else view(input, input._data.shape)


class PermuteBackward0(Node):
    def backward(self, g):
        dims = self.args
        inverse = [0] * len(dims)
        for i, d in enumerate(dims):
            inverse[d] = i
        return g.permute(inverse)


def permute(input, *dims):
    if len(dims) == 1 and not isinstance(dims[0], int):
        dims = tuple(dims[0])
    nd = input._data.ndim
    if len(dims) != nd:
        raise RuntimeError(
            f"permute: number of dimensions in the tensor input does not match the length of "
            f"the desired ordering of dimensions i.e. input.dim() = {nd} is not equal to "
            f"len(dims) = {len(dims)}"
        )
    dims = dims_arg(dims, nd, "permute")
    out = record(PermuteBackward0, input._data.transpose(dims), (input,), args=dims)
    return as_view(input, out, lambda b: b.permute(dims))


def _T(self):
    nd = self._data.ndim
    return permute(self, tuple(range(nd - 1, -1, -1)))


def _mT(self):
    if self._data.ndim < 2:
        raise RuntimeError("tensor.mT is only supported on matrices or batches of matrices. Got 1-D tensor.")
    return transpose(self, -2, -1)


def movedim(input, source, destination):
    nd = input._data.ndim
    src = dims_arg(source, nd, "movedim")
    dst = dims_arg(destination, nd, "movedim")
    order = [d for d in range(nd) if d not in src]
    for s, d in sorted(zip(dst, src)):
        order.insert(s, d)
    return permute(input, order)


# -------------------------------------------------------- squeeze/unsqueeze
class SqueezeBackward0(Node):
    def backward(self, g):
        return g.reshape(self.args)


class SqueezeBackward1(SqueezeBackward0):
    pass


def squeeze(input, dim=None):
    shape = input._data.shape
    if dim is None:
        axes = tuple(i for i, s in enumerate(shape) if s == 1)
        cls = SqueezeBackward0
    else:
        axes = tuple(d for d in dims_arg(dim, len(shape), "squeeze") if shape and shape[d] == 1)
        cls = SqueezeBackward1
    data = input._data.squeeze(axes) if axes else input._data.view()
    out = record(cls, data, (input,), args=shape)
    return as_view(input, out, lambda b: b.squeeze(dim))


class UnsqueezeBackward0(Node):
    def backward(self, g):
        return g.squeeze(self.args)


def unsqueeze(input, dim):
    d = wrap_dim(dim, input._data.ndim + 1, "unsqueeze")
    data = array_module(input._data).expand_dims(input._data, d)
    out = record(UnsqueezeBackward0, data, (input,), args=d)
    return as_view(input, out, lambda b: b.unsqueeze(d))


# -------------------------------------------------------------------- expand
class ExpandBackward0(Node):
    def backward(self, g):
        return g.sum_to_size(self.args)


def expand(input, *sizes):
    # Unlike view/reshape, expand takes -1 ("keep this size") for any number of existing dims.
    if len(sizes) == 1 and not isinstance(sizes[0], int):
        sizes = tuple(sizes[0])
    sizes = tuple(int(s) for s in sizes)
    shape = input._data.shape
    if len(sizes) < len(shape):
        raise RuntimeError(
            f"expand: the number of sizes provided ({len(sizes)}) must be greater or equal to "
            f"the number of dimensions in the tensor ({len(shape)})"
        )
    lead = len(sizes) - len(shape)
    target = [0] * len(sizes)
    for i in reversed(range(len(sizes))):  # from the last dim, as PyTorch checks
        s = sizes[i]
        if i < lead:
            if s < 0:
                raise RuntimeError(
                    f"The expanded size of the tensor ({s}) isn't allowed in a leading, non-existing "
                    f"dimension {i}")
            target[i] = s
            continue
        cur = shape[i - lead]
        if s == -1:
            s = cur
        elif cur != s and cur != 1:
            raise RuntimeError(
                f"The expanded size of the tensor ({s}) must match the existing size ({cur}) at "
                f"non-singleton dimension {i}.  Target sizes: {list(sizes)}.  Tensor sizes: {list(shape)}"
            )
        target[i] = s
    target = tuple(target)
    data = array_module(input._data).broadcast_to(input._data, target)
    out = record(ExpandBackward0, data, (input,), args=shape)
    return as_view(input, out, lambda b: b.expand(target))


def expand_as(input, other):
    return expand(input, other._data.shape)


def broadcast_to(input, size):
    return expand(input, size)


def broadcast_tensors(*tensors):
    xp = array_module(tensors[0]._data)
    shape = xp.broadcast_shapes(*(t._data.shape for t in tensors))
    return tuple(expand(t, shape) for t in tensors)


# -------------------------------------------------------------------- narrow
class NarrowBackward0(Node):
    """The gradient of a slice: zeros with the slice filled in."""

    def backward(self, g):
        from .indexing import slice_scatter_zeros

        shape, key = self.args
        return slice_scatter_zeros(g, shape, key)


def narrow(input, dim, start, length):
    nd = input._data.ndim
    d = wrap_dim(dim, nd, "narrow")
    size = input._data.shape[d]
    if start < 0:
        start += size
    if not (0 <= start <= size and 0 <= length and start + length <= size):
        raise IndexError(
            f"narrow: start ({start}) + length ({length}) exceeds dimension size ({size}) of dim {dim}"
        )
    key = (slice(None),) * d + (slice(start, start + length),)
    out = record(NarrowBackward0, input._data[key], (input,), args=(input._data.shape, key))
    return as_view(input, out, lambda b: b.narrow(d, start, length))


def split(tensor, split_size_or_sections, dim=0):
    d = wrap_dim(dim, tensor._data.ndim, "split")
    size = tensor._data.shape[d]
    if isinstance(split_size_or_sections, int):
        step = split_size_or_sections
        if step <= 0 and size:
            raise RuntimeError(f"split expects split_size be non-negative, but got split_size={step}")
        sizes = [min(step, size - i) for i in range(0, size, step)] if size else [0]
    else:
        sizes = list(split_size_or_sections)
        if sum(sizes) != size:
            raise RuntimeError(
                f"split_with_sizes expects split_sizes to sum exactly to {size} (input tensor's "
                f"size at dimension {d}), but got split_sizes={sizes}"
            )
    if len(sizes) == 1:
        return (narrow(tensor, d, 0, sizes[0]),)
    return _split_views(tensor, d, sizes, "SplitWithSizesBackward0" if not isinstance(
        split_size_or_sections, int) else "SplitBackward0")


def _adjacent_pieces(arrays, d, shape):
    """The array of ``shape`` that ``arrays`` are consecutive pieces of along dim ``d``
    (one buffer, the same strides, each starting where the one before ends along
    ``d``), as a view without a copy; None where they are not. A gradient made for a
    split's pieces in one buffer (``cpu_kernels.attention_grad`` does, for q, k and v
    split from one projection) so comes back whole for free."""
    first = arrays[0]
    if type(first) is not np.ndarray or first.base is None or len(shape) != first.ndim:
        return None
    base, strides = first.base, first.strides
    at = first.__array_interface__["data"][0]
    for a in arrays:
        if (type(a) is not np.ndarray or a.base is not base or a.strides != strides or a.dtype != first.dtype
                or a.__array_interface__["data"][0] != at):
            return None
        at += a.shape[d] * strides[d]
    if sum(a.shape[d] for a in arrays) != shape[d] or any(
            a.shape[:d] + a.shape[d + 1:] != tuple(shape[:d]) + tuple(shape[d + 1:]) for a in arrays):
        return None
    whole = np.lib.stride_tricks.as_strided(first, shape=tuple(shape), strides=strides, writeable=False)
    lo, hi = np.lib.array_utils.byte_bounds(whole)
    blo, bhi = np.lib.array_utils.byte_bounds(base)
    if lo < blo or hi > bhi:
        return None
    return whole


class SplitBackward0(Node):
    """One node for all the pieces of a split: their gradients concatenated (zeros for
    the pieces that got none) in one pass, instead of one zero-padded full-size
    gradient per piece summed into the input's."""

    def backward(self, *grads):
        shape, d, sizes = self.args
        if not _grad_state.enabled and all(g is not None for g in grads):
            whole = _adjacent_pieces([g._data for g in grads], d, shape)
            if whole is not None:
                return _wrap(whole)
        like = next(g for g in grads if g is not None)
        xp = array_module(like._data)
        parts = []
        for g, n in zip(grads, sizes):
            if g is None:
                piece = list(shape)
                piece[d] = n
                g = _wrap(xp.zeros(tuple(piece), like._data.dtype))
            parts.append(g)
        return cat(parts, d)


class SplitWithSizesBackward0(SplitBackward0):
    """``split`` with a list of sizes (PyTorch's ``split_with_sizes``)."""


def _split_views(tensor, d, sizes, name):
    x = tensor._data
    datas, keys, start = [], [], 0
    for n in sizes:
        key = (slice(None),) * d + (slice(start, start + n),)
        datas.append(x[key])
        keys.append((start, n))
        start += n
    cls = SplitBackward0 if name == "SplitBackward0" else SplitWithSizesBackward0
    outs = record_multi(cls, datas, (tensor,), (), diff=(True,) * len(sizes), args=(x.shape, d, tuple(sizes)))
    return tuple(as_view(tensor, o, (lambda b, s=s, n=n: b.narrow(d, s, n))) for o, (s, n) in zip(outs, keys))


def chunk(input, chunks, dim=0):
    if chunks <= 0:
        raise RuntimeError(f"chunk expects `chunks` to be greater than 0, got: {chunks}")
    size = input._data.shape[wrap_dim(dim, input._data.ndim, "chunk")]
    return split(input, max(-(-size // chunks), 1), dim)


def unbind(input, dim=0):
    d = wrap_dim(dim, input._data.ndim, "unbind")
    return tuple(select(input, d, i) for i in range(input._data.shape[d]))


def select(input, dim, index):
    d = wrap_dim(dim, input._data.ndim, "select")
    return input[(slice(None),) * d + (index,)]


# ----------------------------------------------------------- new-memory ops
class CloneBackward0(Node):
    def backward(self, g):
        return g


def clone(input, *, memory_format=None):
    return record(CloneBackward0, input._data.copy(), (input,))


def contiguous(input, memory_format=None):
    if input._data.flags.c_contiguous:
        return input
    return record(CloneBackward0, array_module(input._data).ascontiguousarray(input._data), (input,))


class ToCopyBackward0(Node):
    def backward(self, g):
        dtype, dev = self.args
        return g.to(dtype=dtype, device=dev)


def to(input, *args, dtype=None, device=None, copy=False, non_blocking=False):
    """``to(dtype)``, ``to(device)``, ``to(device, dtype)`` or ``to(other_tensor)``."""
    for a in args:
        if isinstance(a, Tensor):
            dtype, device = a.dtype, a.device
        elif isinstance(a, (_dt.dtype,)) or (isinstance(a, str) and a in _dt._BY_NAME):
            dtype = a
        elif a is not None:
            device = a
    x = input._data
    d = _dt.to_dtype(dtype) if dtype is not None else None
    move = device is not None and _device(device) != backend.device_of(x)
    cast = d is not None and x.dtype != d.np
    if not (move or cast):
        return clone(input) if copy else input
    data = backend.to_device(x, device) if move else x
    if cast:
        data = data.astype(d.np)
    elif not move or copy:
        data = data.copy()
    src = (_dt.from_numpy_dtype(x.dtype), backend.device_of(x))
    if _dt.kind_of(x.dtype) != "f" or (d is not None and not d.is_floating_point):
        return record(ToCopyBackward0, data, ())
    return record(ToCopyBackward0, data, (input,), args=src)


def cuda(input, device=None, non_blocking=False):
    return to(input, device="cuda" if device is None else _cuda_name(device))


def _cuda_name(device):
    return f"cuda:{device}" if isinstance(device, int) else device


def cpu(input):
    return to(input, device="cpu")


def type_as(input, other):
    return to(input, other.dtype)


def _cast(d):
    def method(self, memory_format=None):
        return to(self, d)
    method.__name__ = d.name
    return method


# -------------------------------------------------------------- cat / stack
class CatBackward0(Node):
    def backward(self, g):
        dim, sizes = self.args
        return tuple(split(g, sizes, dim))


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("cat(): expected a non-empty list of Tensors")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise TypeError(f"cat(): expected a sequence of Tensors, but element {i} is {type(t).__name__}")
    err = device_error("cat", *tensors)
    if err is not None:
        raise err
    ref = next((t for t in tensors if t._data.ndim), tensors[0])
    nd = ref._data.ndim
    if nd == 0:
        raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
    d = wrap_dim(dim, nd, "cat")
    # PyTorch skips 1-D empty tensors in cat.
    parts = [t for t in tensors if not (t._data.ndim == 1 and t._data.shape[0] == 0)] or tensors[:1]
    for i, t in enumerate(parts):
        if t._data.ndim != nd:
            raise RuntimeError(
                f"Tensors must have same number of dimensions: got {nd} and {t._data.ndim}"
            )
        for k in range(nd):
            if k != d and t._data.shape[k] != ref._data.shape[k]:
                raise RuntimeError(
                    f"cat(): Sizes of tensors must match except in dimension {d}. Expected size "
                    f"{ref._data.shape[k]} but got size {t._data.shape[k]} for tensor number {i} in "
                    f"the list (shapes {[list(x._data.shape) for x in parts]})."
                )
    data = array_module(ref._data).concatenate([t._data for t in parts], axis=d)
    return record(CatBackward0, data, tuple(parts), args=(d, [t._data.shape[d] for t in parts]))


concat = concatenate = cat


class StackBackward0(Node):
    def backward(self, g):
        return tuple(unbind(g, self.args))


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError("stack expects a non-empty TensorList")
    shape = tensors[0]._data.shape
    for i, t in enumerate(tensors):
        if t._data.shape != shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 "
                f"and {list(t._data.shape)} at entry {i}"
            )
    d = wrap_dim(dim, len(shape) + 1, "stack")
    data = array_module(tensors[0]._data).stack([t._data for t in tensors], axis=d)
    return record(StackBackward0, data, tuple(tensors), args=d)


def hstack(tensors):
    return cat(tensors, 0 if tensors[0]._data.ndim == 1 else 1)


def vstack(tensors):
    return cat([t if t._data.ndim > 1 else t.unsqueeze(0) for t in tensors], 0)


class FlipBackward0(Node):
    def backward(self, g):
        return g.flip(self.args)


def flip(input, dims):
    dims = dims_arg(dims, input._data.ndim, "flip")
    xp = array_module(input._data)
    # A 0-d tensor accepts dim 0 (or -1) and has nothing to flip.
    flips = dims and input._data.ndim
    data = xp.ascontiguousarray(xp.flip(input._data, dims)) if flips else input._data.copy()
    return record(FlipBackward0, data, (input,), args=dims)


class RepeatBackward0(Node):
    def backward(self, g):
        in_shape, reps = self.args
        lead = len(reps) - len(in_shape)
        full = (1,) * lead + tuple(in_shape)
        split_shape = []
        for r, s in zip(reps, full):
            split_shape += [r, s]
        g = g.reshape(split_shape).sum(dim=tuple(range(0, 2 * len(full), 2)))
        return g.reshape(in_shape)


def repeat(input, *sizes):
    reps = _shape_args(sizes, "repeat")
    if len(reps) < input._data.ndim:
        raise RuntimeError(
            "Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor"
        )
    data = array_module(input._data).tile(input._data, reps)
    return record(RepeatBackward0, data, (input,), args=(input._data.shape, reps))


# ----------------------------------------------------------------------- pad
class ConstantPadNdBackward0(Node):
    """The gradient of a constant pad: the gradient cropped back (negated pads)."""

    def backward(self, g):
        return _constant_pad(g, tuple(-p for p in self.args), 0)


def _constant_pad(input, pad, value):
    x = input._data
    nd = x.ndim
    out_shape, src, dst = list(x.shape), [slice(None)] * nd, [slice(None)] * nd
    for k in range(len(pad) // 2):
        d = nd - 1 - k
        lo, hi = pad[2 * k], pad[2 * k + 1]
        n = x.shape[d]
        size = n + lo + hi
        if size < 0:
            raise RuntimeError(
                f"The input size {n}, plus negative padding {lo} and {hi} resulted in a negative "
                f"output size, which is invalid. Check dimension {d} of your input.")
        out_shape[d] = size
        start, stop = max(-lo, 0), n - max(-hi, 0)
        length = max(stop - start, 0)
        src[d] = slice(start, start + length)
        dst[d] = slice(max(lo, 0), max(lo, 0) + length)
    xp = array_module(x)
    data = xp.full(out_shape, value, dtype=x.dtype)
    data[tuple(dst)] = x[tuple(src)]
    return record(ConstantPadNdBackward0, data, (input,), args=tuple(pad))


def _pad_index(n, lo, hi, mode):
    """The source positions, along one dim of size ``n``, of a ``mode`` pad by (lo, hi)."""
    import numpy as np

    i = np.arange(-lo, n + hi)
    if mode == "reflect":
        period = 2 * (n - 1)
        i = np.abs(i) % period if period else np.zeros_like(i)
        return np.where(i > n - 1, period - i, i)
    if mode == "replicate":
        return np.clip(i, 0, n - 1)
    return i % n  # circular


class _IndexPadBackward(Node):
    """The gradient of a reflect/replicate/circular pad: each output's gradient added back to
    the input position it was copied from."""

    def backward(self, g):
        shape, picks = self.args
        for d, index in reversed(picks):
            target = list(g.shape)
            target[d] = shape[d]
            g = g.new_zeros(target).index_add(d, index, g)
            shape_done = target  # noqa: F841
        return g


def _index_pad_node(name):
    return type(name, (_IndexPadBackward,), {"__doc__": _IndexPadBackward.__doc__})


ReflectionPad1DBackward0 = _index_pad_node("ReflectionPad1DBackward0")
ReflectionPad2DBackward0 = _index_pad_node("ReflectionPad2DBackward0")
ReflectionPad3DBackward0 = _index_pad_node("ReflectionPad3DBackward0")
ReplicationPad1DBackward0 = _index_pad_node("ReplicationPad1DBackward0")
ReplicationPad2DBackward0 = _index_pad_node("ReplicationPad2DBackward0")
ReplicationPad3DBackward0 = _index_pad_node("ReplicationPad3DBackward0")
# PyTorch builds the circular pad from slice copies (its grad_fn is CopySlices); here it is one node.
CircularPadBackward0 = _index_pad_node("CircularPadBackward0")
_PAD_NODES = {("reflect", 1): ReflectionPad1DBackward0, ("reflect", 2): ReflectionPad2DBackward0,
              ("reflect", 3): ReflectionPad3DBackward0, ("replicate", 1): ReplicationPad1DBackward0,
              ("replicate", 2): ReplicationPad2DBackward0, ("replicate", 3): ReplicationPad3DBackward0}


def _index_pad(input, pad, mode):
    x = input._data
    nd, k = x.ndim, len(pad) // 2
    if k > 3 or nd not in (k + 1, k + 2):
        raise NotImplementedError(
            "Only 2D, 3D, 4D, 5D padding with non-constant padding are supported for now")
    names = {"reflect": "Reflection", "replicate": "Replication", "circular": "Circular"}
    xp = array_module(x)
    data, picks = x, []
    for j in range(k):
        d = nd - 1 - j
        lo, hi = pad[2 * j], pad[2 * j + 1]
        n = x.shape[d]
        if mode == "reflect" and (lo >= n or hi >= n):
            raise RuntimeError(
                f"Argument #4: Padding size should be less than the corresponding input dimension, "
                f"but got: padding ({lo}, {hi}) at dimension {d} of input {list(x.shape)}")
        if mode == "circular" and (lo > n or hi > n):
            raise RuntimeError("Padding value causes wrapping around more than once.")
        if n == 0 and lo + hi > 0:
            raise RuntimeError(f"{names[mode]}Pad{k}d: input tensor must have a non-zero size in "
                               f"dimension {d}, got {list(x.shape)}")
        if n + lo + hi < 0 or (mode != "circular" and (lo < 0 or hi < 0) and n + lo + hi < 1):
            raise RuntimeError(f"input tensor is too small for padding ({lo}, {hi}) at dim {d}")
        index = _pad_index(n, lo, hi, mode)
        data = xp.take(data, xp.asarray(index), axis=d)
        picks.append((d, index))
    idx = [(d, Tensor._from_index(i, x)) if hasattr(Tensor, "_from_index") else (d, _index_tensor(i, x))
           for d, i in picks]
    cls = _PAD_NODES.get((mode, k), CircularPadBackward0)
    return record(cls, data, (input,), args=(x.shape, idx))


def _index_tensor(index, like):
    from .creation import tensor

    t = tensor(index.astype("int64"))
    return t.to(backend.device_of(like)) if backend.device_of(like).type != "cpu" else t


def pad(input, pad, mode="constant", value=None):
    pad = tuple(int(p) for p in pad)
    if len(pad) % 2:
        raise RuntimeError("Padding length must be divisible by 2")
    if len(pad) // 2 > input._data.ndim:
        raise RuntimeError(
            "Padding length should be less than or equal to two times the input dimension but got "
            f"padding length {len(pad)} and input of dimension {input._data.ndim}")
    if mode == "constant":
        return _constant_pad(input, pad, 0 if value is None else value)
    if value is not None and value != 0:
        raise RuntimeError(f'Padding mode "{mode}" doesn\'t take in value argument')
    if mode not in ("reflect", "replicate", "circular"):
        raise NotImplementedError(f"Unrecognised padding mode {mode}")
    return _index_pad(input, pad, mode)


# --------------------------------------------------------- pixel (un)shuffle
class PixelShuffleBackward0(Node):
    def backward(self, g):
        return pixel_unshuffle(g, self.args)


class PixelUnshuffleBackward0(Node):
    def backward(self, g):
        return pixel_shuffle(g, self.args)


def pixel_shuffle(input, upscale_factor):
    x = input._data
    r = int(upscale_factor)
    if x.ndim < 3:
        raise RuntimeError(f"pixel_shuffle expects input to have at least 3 dimensions, but got "
                           f"input with {x.ndim} dimension(s)")
    if r <= 0:
        raise RuntimeError(f"pixel_shuffle expects a positive upscale_factor, but got {r}")
    *batch, c, h, w = x.shape
    if c % (r * r):
        raise RuntimeError("pixel_shuffle expects its input's 'channel' dimension to be divisible "
                           f"by the square of upscale_factor, but input.size(-3)={c} is not "
                           f"divisible by {r * r}")
    nb = len(batch)
    oc = c // (r * r)
    y = x.reshape(*batch, oc, r, r, h, w)
    b = tuple(range(nb))
    y = y.transpose(b + (nb, nb + 3, nb + 1, nb + 4, nb + 2)).reshape(*batch, oc, h * r, w * r)
    return record(PixelShuffleBackward0, array_module(x).ascontiguousarray(y), (input,), args=r)


def pixel_unshuffle(input, downscale_factor):
    x = input._data
    r = int(downscale_factor)
    if x.ndim < 3:
        raise RuntimeError(f"pixel_unshuffle expects input to have at least 3 dimensions, but got "
                           f"input with {x.ndim} dimension(s)")
    if r <= 0:
        raise RuntimeError(f"pixel_unshuffle expects a positive downscale_factor, but got {r}")
    *batch, c, h, w = x.shape
    if h % r:
        raise RuntimeError("pixel_unshuffle expects height to be divisible by downscale_factor, "
                           f"but input.size(-2)={h} is not divisible by {r}")
    if w % r:
        raise RuntimeError("pixel_unshuffle expects width to be divisible by downscale_factor, "
                           f"but input.size(-1)={w} is not divisible by {r}")
    nb = len(batch)
    y = x.reshape(*batch, c, h // r, r, w // r, r)
    b = tuple(range(nb))
    y = y.transpose(b + (nb, nb + 2, nb + 4, nb + 1, nb + 3)).reshape(*batch, c * r * r, h // r, w // r)
    return record(PixelUnshuffleBackward0, array_module(x).ascontiguousarray(y), (input,), args=r)
