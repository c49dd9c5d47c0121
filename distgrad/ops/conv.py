"""Convolution and pooling: conv1d/conv2d and their transposes, max and average
pooling, adaptive average pooling.

Every op here is one picture: a window of ``kernel`` positions (with stride,
dilation and padding) slides over a "big" spatial grid, and each window is one
point of a "small" grid. ``im2col`` reads all windows as a strided view of the
padded big grid (no copy); ``col2im``, its adjoint, adds windows back with one
vectorized add per kernel position. A convolution is im2col and one batched
matrix product; its transpose is the product and col2im; their gradients swap
the two. Backward runs on arrays when no graph is built; with ``create_graph``
the same formulas run as tensor ops (im2col and col2im are each other's
derivative), so every op here can be differentiated again.
"""
from __future__ import annotations
from ..dtype import kind_of as _kind_of

import itertools
import math
from typing import NamedTuple

from ..autograd.function import Node, record
from ..autograd.grad_mode import state as _grad_state
from ..backend import is_device_array
from ._util import Tensor, _wrap, array_module, device_error, down, up


class Window(NamedTuple):
    """How the windows of an op lie on its grids, per spatial dim."""

    kernel: tuple
    stride: tuple
    dilation: tuple
    pads: tuple      # (low, high) zero (or -inf) padding of the big grid
    big: tuple       # the big grid's size, unpadded
    small: tuple     # the small grid's size: the number of windows

    def offsets(self):
        """Each kernel position, and the slices of the padded big grid that its
        element of every window covers."""
        for k in itertools.product(*map(range, self.kernel)):
            yield k, tuple(slice(i * d, i * d + s * (n - 1) + 1, s)
                           for i, d, s, n in zip(k, self.dilation, self.stride, self.small))


_ALL2 = (slice(None), slice(None))


def _pad(x, win, fill=0.0):
    """``x`` (N, C, *big) inside its padding (``x`` itself when there is none)."""
    if not any(lo or hi for lo, hi in win.pads):
        return x
    xp = array_module(x)
    shape = x.shape[:2] + tuple(b + lo + hi for b, (lo, hi) in zip(win.big, win.pads))
    out = xp.zeros(shape, x.dtype) if fill == 0 else xp.full(shape, fill, x.dtype)
    out[_ALL2 + tuple(slice(lo, lo + b) for b, (lo, _) in zip(win.big, win.pads))] = x
    return out


def _strided(x, shape, strides):
    """A view of ``x`` with overlapping windows: read-only where the backend has the flag."""
    as_strided = array_module(x).lib.stride_tricks.as_strided
    return as_strided(x, shape, strides) if is_device_array(x) else as_strided(x, shape, strides, writeable=False)


def _im2col(x, win, fill=0.0):
    """(N, C, *big) -> (N, C, *kernel, *small): a read-only strided view of the padded input."""
    x = _pad(x, win, fill)
    st = x.strides[2:]
    strides = (x.strides[:2] + tuple(s * d for s, d in zip(st, win.dilation))
               + tuple(s * k for s, k in zip(st, win.stride)))
    return _strided(x, x.shape[:2] + win.kernel + win.small, strides)


def _col2im(piece, lead, dtype, xp, win):
    """The adjoint of ``_im2col``: a zero (N, C, *big) grid (``lead`` = (N, C)) with
    ``piece(k)`` (N, C, *small) added at every window's kernel position ``k``."""
    padded = tuple(b + lo + hi for b, (lo, hi) in zip(win.big, win.pads))
    out = xp.zeros(tuple(lead) + padded, dtype)
    for k, sl in win.offsets():
        out[_ALL2 + sl] += piece(k)
    if not any(lo or hi for lo, hi in win.pads):
        return out
    return xp.ascontiguousarray(out[_ALL2 + tuple(slice(lo, lo + b) for b, (lo, _) in zip(win.big, win.pads))])


class Im2ColBackward0(Node):
    def backward(self, g):
        win, canon, in_shape = self.args
        return col2im(g, win, canon, in_shape)


class Col2ImBackward0(Node):
    def backward(self, g):
        win, shape = self.args
        return im2col(g, win, shape)


def im2col(input, win, shape=None):
    """The windows of ``input`` (N, C, *big), or unbatched (C, *big), as a new
    (N, C, *kernel, *small) tensor (reshaped to ``shape`` when given, as ``F.unfold``
    lays them out)."""
    x = input._data
    if x.ndim == len(win.kernel) + 1:
        x = x[None]
    data = array_module(x).ascontiguousarray(_im2col(x, win))
    canon = None if shape is None else data.shape
    return record(Im2ColBackward0, data if shape is None else data.reshape(shape), (input,),
                  args=(win, canon, input._data.shape))


def col2im(input, win, canon=None, out_shape=None):
    """(N, C, *kernel, *small) windows (or any shape that reshapes to ``canon``) summed
    back onto an (N, C, *big) grid (reshaped to ``out_shape`` when given)."""
    c = input._data
    if canon is not None:
        c = c.reshape(canon)
    data = _col2im(lambda k: c[_ALL2 + k], c.shape[:2], c.dtype, array_module(c), win)
    if out_shape is not None:
        data = data.reshape(out_shape)
    return record(Col2ImBackward0, data, (input,), args=(win, None if canon is None else input._data.shape))


# ------------------------------------------------------------- convolution
# The weight is (small channels, big channels / groups, *kernel) both ways: a
# convolution maps big (its input) to small, a transposed one small to big. On
# arrays the products run channels-last, (G, N * positions, [kernel x] C/G) per
# group: the window copy then moves runs of kernel-width x channels contiguous
# values, and one matrix product per group covers the whole batch.
def _channels_last(a, groups, win=None):
    """(N, C, *s) -> (N, *s, G, C/G), contiguous; inside the zero padding of
    ``win``'s big grid when ``win`` is given."""
    xp = array_module(a)
    n, c = a.shape[:2]
    at = a.transpose((0,) + tuple(range(2, a.ndim)) + (1,))
    if win is None or not any(lo or hi for lo, hi in win.pads):
        out = xp.ascontiguousarray(at)
    else:
        out = xp.zeros((n,) + tuple(b + lo + hi for b, (lo, hi) in zip(win.big, win.pads)) + (c,), a.dtype)
        out[(slice(None),) + tuple(slice(lo, lo + b) for b, (lo, _) in zip(win.big, win.pads))] = at
    return out.reshape(out.shape[:-1] + (groups, c // groups))


def _windows_last(xl, win):
    """(N, *padded big, G, C/G) -> (N, *small, *kernel, G, C/G): a read-only strided view."""
    st = xl.strides
    sp = st[1:-2]
    strides = ((st[0],) + tuple(s * k for s, k in zip(sp, win.stride))
               + tuple(s * d for s, d in zip(sp, win.dilation)) + st[-2:])
    return _strided(xl, (xl.shape[0],) + win.small + win.kernel + xl.shape[-2:], strides)


def _rows(v, groups, rows):
    """(N, *s, [*kernel,] G, C/G) -> (G, rows, [kernel x] C/G), contiguous."""
    m = array_module(v).ascontiguousarray(v.transpose((v.ndim - 2,) + tuple(range(v.ndim - 2)) + (v.ndim - 1,)))
    return m.reshape(groups, rows, -1)


def _weight_rows(w, groups):
    """(Cs, Cb/G, *kernel) -> (G, kernel x Cb/G, Cs/G), matching ``_rows`` of the windows."""
    nd = w.ndim - 2
    wg = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
    return wg.transpose((0,) + tuple(range(3, 3 + nd)) + (2, 1)).reshape(groups, -1, w.shape[0] // groups)


def _from_rows(m, n, spatial):
    """(G, N * prod(spatial), C/G) -> (N, G, C/G, *spatial), a view."""
    a = m.reshape((m.shape[0], n) + tuple(spatial) + (m.shape[2],))
    return a.transpose((1, 0, a.ndim - 1) + tuple(range(2, a.ndim - 1)))


def _cols(big, win, groups):
    """The windows of ``big`` (N, Cb, *big) as (G, N * prod(small), kernel x Cb/G)."""
    return _rows(_windows_last(_channels_last(big, groups, win), win), groups,
                 big.shape[0] * math.prod(win.small))


def _small_rows(small, groups):
    """``small`` (N, Cs, *small) as (G, N * prod(small), Cs/G)."""
    return _rows(_channels_last(small, groups), groups, small.shape[0] * math.prod(small.shape[2:]))


def _direct(cols, w, n, win, groups):
    """small = the correlation of the windows ``cols`` with ``w``, as an (N, G, Cs/G, *small) view."""
    return _from_rows(cols @ _weight_rows(w, groups), n, win.small)


def _transposed(sm, w, n, win, groups):
    """big = the adjoint of ``_direct`` applied to ``small`` (as ``_small_rows``), a new
    (N, Cb, *big) array. The product runs per kernel position, so each position's part
    is contiguous when it is added into its window."""
    xp = array_module(sm)
    nd = len(win.kernel)
    cs, cb = w.shape[0] // groups, w.shape[1]
    wk = w.reshape(groups, cs, cb, -1).transpose(0, 3, 1, 2)            # (G, K, Cs/G, Cb/G)
    parts = xp.matmul(sm[:, None], wk)                                  # (G, K, N*L, Cb/G)
    padded = tuple(b + lo + hi for b, (lo, hi) in zip(win.big, win.pads))
    out = xp.zeros((groups, n) + padded + (cb,), sm.dtype)
    for flat, (_, sl) in enumerate(win.offsets()):
        out[_ALL2 + sl] += parts[:, flat].reshape((groups, n) + win.small + (cb,))
    out = out[_ALL2 + tuple(slice(lo, lo + b) for b, (lo, _) in zip(win.big, win.pads))]
    out = xp.ascontiguousarray(out.transpose((1, 0, nd + 2) + tuple(range(2, nd + 2))))
    return out.reshape((n, -1) + win.big)


def _weight_grad(sm, cols, w_shape):
    """The gradient of the weight from the small side's rows and the big side's windows."""
    nd = len(w_shape) - 2
    m = (sm.transpose(0, 2, 1) @ cols).reshape((w_shape[0],) + tuple(w_shape[2:]) + (w_shape[1],))
    return array_module(m).ascontiguousarray(m.transpose((0, nd + 1) + tuple(range(1, nd + 1))))


def _weight_grad_graph(small, big, win, groups):
    """``_weight_grad`` with tensor ops, for create_graph."""
    n, L = small.shape[0], math.prod(win.small)
    cols = im2col(big, win).reshape(n, groups, -1, L)
    m = (small.reshape(n, groups, -1, L) @ cols.mT).sum(0)
    return m.reshape((small.shape[1], big.shape[1] // groups) + win.kernel)


def _adjoint_window(win, cs, cb):
    """For a stride-1 convolution from ``cb`` to ``cs`` channels, the window under which the
    input gradient is a plain correlation of the output gradient with the flipped kernel
    (None when the padding is too wide for that, or it would cost more than ``_transposed``)."""
    if any(s != 1 for s in win.stride):
        return None
    # its windows cover the big grid with small-side channels; the per-position adds of
    # ``_transposed`` cover the small grid with big-side channels: take the smaller
    if cs * math.prod(win.big) > 2 * cb * math.prod(win.small):
        return None
    pads = tuple((d * (k - 1) - lo, d * (k - 1) - hi) for d, k, (lo, hi) in zip(win.dilation, win.kernel, win.pads))
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        return None
    return Window(win.kernel, win.stride, win.dilation, pads, win.small, win.big)


def _flipped(w, groups):
    """(Cs, Cb/G, *kernel) -> (Cb, Cs/G, *kernel) with every kernel reversed: the weight
    of the adjoint correlation."""
    nd = w.ndim - 2
    cs, cbg = w.shape[0] // groups, w.shape[1]
    wt = w.reshape((groups, cs, cbg) + w.shape[2:]).swapaxes(1, 2)
    wt = wt[(slice(None),) * 3 + (slice(None, None, -1),) * nd]
    return array_module(w).ascontiguousarray(wt).reshape((groups * cbg, cs) + w.shape[2:])


# Forward columns kept for the weight gradient when within these many bytes: above the
# upper bound they cost too much memory; below the lower one, measured, recomputing
# them was cheaper than holding them.
_KEEP_COLS_MIN, _KEEP_COLS_BYTES = 8 << 20, 64 << 20


class ConvolutionBackward0(Node):
    def backward(self, g):
        x, w = self.saved_tensors
        win, groups, transposed, kept = self.args
        big, small = (g, x) if transposed else (x, g)
        spatial = tuple(range(2, g._data.ndim))
        if _grad_state.enabled:  # create_graph: every gradient is a graph of its own
            gx = _convolution(g, w, None, win, groups, not transposed) if self.needs(0) else None
            gw = _weight_grad_graph(small, big, win, groups) if self.needs(1) else None
            gb = g.sum((0,) + spatial) if len(self.next_functions) == 3 and self.needs(2) else None
        else:
            dt = g._data.dtype
            gd, wd, n = up(g._data), up(w._data), g._data.shape[0]
            gx = gw = gb = None
            adj = None if transposed or not self.needs(0) else _adjoint_window(win, wd.shape[0], wd.shape[1] * groups)
            # The big side's windows or the small side's rows serve both gradients.
            cols = kept if kept is not None else (
                _cols(up(big._data), win, groups) if transposed or self.needs(1) else None)
            sm = _small_rows(up(small._data), groups) if (not transposed and adj is None and self.needs(0)) \
                or self.needs(1) else None
            if self.needs(0):
                if transposed:
                    gx = _wrap(down(_merge_groups(_direct(cols, wd, n, win, groups)), dt))
                elif adj is not None:
                    gx = _wrap(down(_merge_groups(_direct(_cols(gd, adj, groups), _flipped(wd, groups), n, adj,
                                                          groups)), dt))
                else:
                    gx = _wrap(down(_transposed(sm, wd, n, win, groups), dt))
            if self.needs(1):
                gw = _wrap(down(_weight_grad(sm, cols, wd.shape), dt))
            if len(self.next_functions) == 3 and self.needs(2):
                gb = _wrap(down(gd.sum(axis=(0,) + spatial), dt))
        return (gx, gw) if len(self.next_functions) == 2 else (gx, gw, gb)


def _merge_groups(y, bias=None):
    """(N, G, C/G, *s) -> a new (N, C, *s) array, plus ``bias`` (C,) when given."""
    xp = array_module(y)
    out = xp.empty(y.shape[:1] + (y.shape[1] * y.shape[2],) + y.shape[3:], y.dtype)
    if bias is None:
        out.reshape(y.shape)[...] = y
    else:
        xp.add(y, bias.reshape(y.shape[1:3] + (1,) * (y.ndim - 3)), out=out.reshape(y.shape))
    return out


def _convolution(input, weight, bias, win, groups, transposed):
    """The one convolution op: (N, C, *grid) input, checked arguments."""
    x, w = input._data, weight._data
    b = None if bias is None else bias._data
    dt, x, w = x.dtype, up(x), up(w)  # bfloat16: computed in float32, rounded once
    b = None if b is None else up(b)
    n = x.shape[0]
    if transposed:
        out = _transposed(_small_rows(x, groups), w, n, win, groups)
        if b is not None:
            out += b.reshape((-1,) + (1,) * len(win.kernel))
    else:
        cols = _cols(x, win, groups)
        out = _merge_groups(_direct(cols, w, n, win, groups), b)
    # Without create_graph, the weight gradient reuses the forward's windows if they are small enough.
    kept = cols if (not transposed and _grad_state.enabled and weight._requires_grad
                    and _KEEP_COLS_MIN <= cols.nbytes <= _KEEP_COLS_BYTES) else None
    inputs = (input, weight) if bias is None else (input, weight, bias)
    return record(ConvolutionBackward0, down(out, dt), inputs, (input, weight), args=(win, groups, transposed, kept))


# ----------------------------------------------------------- argument checks
def _ntuple(v, n, name, op):
    if isinstance(v, int):
        return (v,) * n
    v = tuple(v)
    if len(v) == 1 and n > 1:
        return v * n
    if len(v) != n or not all(isinstance(i, int) for i in v):
        raise RuntimeError(f"{op}: expected {name} to be a single integer value or a list of {n} values, "
                           f"got {name}={list(v)}")
    return v


def _sizes(t):
    return " x ".join(map(str, t))


def _check_conv(op, nd, input, weight, bias, groups, transposed):
    if not isinstance(input, Tensor) or not isinstance(weight, Tensor):
        raise TypeError(f"{op}(): expected input and weight to be Tensors, got "
                        f"{type(input).__name__} and {type(weight).__name__}")
    x, w = input._data, weight._data
    if x.ndim not in (nd + 1, nd + 2):
        raise RuntimeError(f"Expected {nd + 1}D (unbatched) or {nd + 2}D (batched) input to {op}, "
                           f"but got input of size: {list(x.shape)}")
    if w.ndim != nd + 2:
        raise RuntimeError(f"{op}: expected a {nd + 2}-D weight ({'in' if transposed else 'out'}_channels, "
                           f"{'out' if transposed else 'in'}_channels / groups, *kernel_size), got weight of "
                           f"size {list(w.shape)}")
    err = device_error(op, *(t for t in (input, weight, bias) if t is not None))
    if err is not None:
        raise err
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t._data.dtype != x.dtype:
            raise RuntimeError(f"{op}: Input type ({input.dtype}) and {name} type ({t.dtype}) should be the "
                               f"same; convert one of them with .to(dtype)")
    if not isinstance(groups, int) or groups <= 0:
        raise RuntimeError(f"{op}: non-positive groups is not supported (groups={groups})")
    if w.shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(w.shape)} instead")
    xs = x.shape if x.ndim == nd + 2 else (1,) + x.shape
    want = w.shape[0] if transposed else w.shape[1] * groups
    if xs[1] != want:
        kind = "transposed=1, " if transposed else f"groups={groups}, "
        raise RuntimeError(f"Given {kind}weight of size {list(w.shape)}, expected input{list(x.shape)} to have "
                           f"{want} channels, but got {xs[1]} channels instead")
    out_ch = w.shape[1] * groups if transposed else w.shape[0]
    if bias is not None and bias._data.shape != (out_ch,):
        raise RuntimeError(f"Given weight of size {list(w.shape)}, expected bias to be 1-dimensional with "
                           f"{out_ch} elements, but got bias of size {list(bias._data.shape)} instead")


def _positive(op, stride, dilation):
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"{op}: non-positive stride is not supported (stride={list(stride)})")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"{op}: dilation should be greater than zero (dilation={list(dilation)})")


def conv_pads(padding, kernel, stride, dilation, nd, op):
    """(low, high) per dim for ``padding`` (an int, a tuple, 'valid' or 'same')."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * nd
        if padding != "same":
            raise RuntimeError(f"Invalid padding string: '{padding}' (use 'valid', 'same', an int or a tuple)")
        if any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        total = tuple(d * (k - 1) for d, k in zip(dilation, kernel))
        return tuple((t // 2, t - t // 2) for t in total)
    pad = _ntuple(padding, nd, "padding", op)
    if any(p < 0 for p in pad):
        raise RuntimeError(f"{op}: negative padding is not supported (padding={list(pad)})")
    return tuple((p, p) for p in pad)


def _conv(op, nd, input, weight, bias, stride, padding, dilation, groups):
    _check_conv(op, nd, input, weight, bias, groups, False)
    kernel = tuple(weight._data.shape[2:])
    stride = _ntuple(stride, nd, "stride", op)
    dilation = _ntuple(dilation, nd, "dilation", op)
    _positive(op, stride, dilation)
    pads = conv_pads(padding, kernel, stride, dilation, nd, op)
    unbatched = input._data.ndim == nd + 1
    x = input.unsqueeze(0) if unbatched else input
    big = tuple(x._data.shape[2:])
    padded = tuple(b + lo + hi for b, (lo, hi) in zip(big, pads))
    reach = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if any(r > p for r, p in zip(reach, padded)):
        raise RuntimeError(f"Calculated padded input size per channel: ({_sizes(padded)}). Kernel size: "
                           f"({_sizes(reach)}). Kernel size can't be greater than actual input size")
    small = tuple((p - r) // s + 1 for p, r, s in zip(padded, reach, stride))
    win = Window(kernel, stride, dilation, pads, big, small)
    out = _convolution(x, weight, bias, win, groups, False)
    return out.squeeze(0) if unbatched else out


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv1d", 1, input, weight, bias, stride, padding, dilation, groups)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv2d", 2, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(op, nd, input, weight, bias, stride, padding, output_padding, groups, dilation):
    _check_conv(op, nd, input, weight, bias, groups, True)
    kernel = tuple(weight._data.shape[2:])
    stride = _ntuple(stride, nd, "stride", op)
    dilation = _ntuple(dilation, nd, "dilation", op)
    _positive(op, stride, dilation)
    if isinstance(padding, str):
        raise TypeError(f"{op}: padding must be an int or a tuple of ints, not '{padding}'")
    pad = _ntuple(padding, nd, "padding", op)
    out_pad = _ntuple(output_padding, nd, "output_padding", op)
    if any(p < 0 for p in pad + out_pad):
        raise RuntimeError(f"{op}: negative padding is not supported (padding={list(pad)}, "
                           f"output_padding={list(out_pad)})")
    if any(o >= s and o >= d for o, s, d in zip(out_pad, stride, dilation)):
        raise RuntimeError(f"{op}: output padding must be smaller than either stride or dilation, but got "
                           f"output_padding={list(out_pad)}, stride={list(stride)}, dilation={list(dilation)}")
    unbatched = input._data.ndim == nd + 1
    x = input.unsqueeze(0) if unbatched else input
    small = tuple(x._data.shape[2:])
    big = tuple((n - 1) * s - 2 * p + d * (k - 1) + o + 1
                for n, s, p, d, k, o in zip(small, stride, pad, dilation, kernel, out_pad))
    if any(b <= 0 for b in big):
        raise RuntimeError(f"Given input size per channel: ({_sizes(small)}). Calculated output size per "
                           f"channel: ({_sizes(big)}). Output size is too small")
    win = Window(kernel, stride, dilation, tuple((p, p) for p in pad), big, small)
    out = _convolution(x, weight, bias, win, groups, True)
    return out.squeeze(0) if unbatched else out


def conv_transpose1d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose("conv_transpose1d", 1, input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose("conv_transpose2d", 2, input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


# ----------------------------------------------------------------- pooling
def _pool_window(op, input, kernel_size, stride, padding, dilation, ceil_mode, max_pool):
    """The window of a 2-D pooling op on (*, C, H, W), as PyTorch sizes it."""
    x = input._data
    if x.ndim not in (3, 4) or 0 in x.shape[-3:]:
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with non-zero channel and spatial "
                           f"sizes for input, but got: {list(x.shape)}")
    kernel = _ntuple(kernel_size, 2, "kernel_size", op)
    stride = kernel if stride is None or stride == [] or stride == () else _ntuple(stride, 2, "stride", op)
    pad = _ntuple(padding, 2, "padding", op)
    dilation = _ntuple(dilation, 2, "dilation", op)
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{op}: kernel_size must be greater than zero, but got kernel_size={list(kernel)}")
    _positive(op, stride, dilation)
    for p, k, d in zip(pad, kernel, dilation):
        if p < 0 or p > (d * (k - 1) + 1) // 2:
            what = "effective kernel size" if max_pool else "kernel size"
            raise RuntimeError(f"{op}: pad should be at most half of {what}, but got pad={p}, kernel_size={k}"
                               + (f" and dilation={d}" if max_pool else ""))
    big = tuple(x.shape[-2:])
    small = []
    for b, k, s, p, d in zip(big, kernel, stride, pad, dilation):
        n = (b + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
        if ceil_mode and (n - 1) * s >= b + p:
            n -= 1
        small.append(n)
    if any(n < 1 for n in small):
        shape = "x".join(map(str, x.shape[-3:]))
        raise RuntimeError(f"{op}: Given input size: ({shape}). Calculated output size: "
                           f"({x.shape[-3]}x{small[0]}x{small[1]}). Output size is too small")
    pads = tuple((p, max(p, (n - 1) * s + d * (k - 1) + 1 - b - p))
                 for b, k, s, p, d, n in zip(big, kernel, stride, pad, dilation, small))
    return Window(kernel, stride, dilation, pads, big, tuple(small))


def _planes(a):
    """(*, H, W) as (1, planes, H, W): pooling treats every leading index alike."""
    return a.reshape((1, -1) + tuple(a.shape[-2:]))


def _tiled(win):
    """Whether the windows tile the grid: kernel == stride, no dilation or padding."""
    return (win.kernel == win.stride and all(d == 1 for d in win.dilation)
            and not any(lo or hi for lo, hi in win.pads))


class MaxPool2DWithIndicesBackward0(Node):
    def backward(self, g):
        arg, win, shape = self.args   # the kernel position of each window's maximum
        if _grad_state.enabled:  # create_graph: the same routing with tensor ops
            kpos = array_module(arg).arange(math.prod(win.kernel)).reshape((1, 1) + win.kernel + (1, 1))
            miss = _wrap(arg.reshape((1, -1, 1, 1) + win.small) != kpos)
            cols = g.reshape((1, -1, 1, 1) + win.small).expand(miss.shape).masked_fill(miss, 0.0)
            return col2im(cols, win).reshape(shape)
        gd = g._data.reshape(arg.shape)
        xp, zero = array_module(gd), gd.dtype.type(0)
        # a product with the mask is much faster than ``where``; they differ only where
        # the gradient is not finite
        finite = bool(xp.isfinite(gd).all())
        if _tiled(win):  # every input point in at most one window: one pass per kernel position
            (h, w), (kh, kw) = win.small, win.kernel
            tiles = xp.empty(arg.shape[:2] + (h, kh, w, kw), gd.dtype)
            for i in range(kh):
                for j in range(kw):
                    hit = arg == i * kw + j
                    if finite:
                        xp.multiply(gd, hit, out=tiles[:, :, :, i, :, j])
                    else:
                        tiles[:, :, :, i, :, j] = xp.where(hit, gd, zero)
            gx = tiles.reshape(arg.shape[:2] + (h * kh, w * kw))
            if gx.shape[2:] != tuple(win.big):
                full = xp.zeros(arg.shape[:2] + tuple(win.big), gd.dtype)
                full[..., :h * kh, :w * kw] = gx
                gx = full
            return _wrap(gx.reshape(shape))
        if finite:
            return _wrap(_col2im(lambda k: gd * (arg == k[0] * win.kernel[1] + k[1]),
                                 arg.shape[:2], gd.dtype, xp, win).reshape(shape))
        return _wrap(_col2im(lambda k: xp.where(arg == k[0] * win.kernel[1] + k[1], gd, zero),
                             arg.shape[:2], gd.dtype, xp, win).reshape(shape))


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    win = _pool_window("max_pool2d", input, kernel_size, stride, padding, dilation, ceil_mode, True)
    x = input._data
    xp = array_module(x)
    if _tiled(win):  # windows side by side: views of the input itself, no copy
        (h, w), (kh, kw) = win.small, win.kernel
        p = _planes(x)[..., :h * kh, :w * kw]
        tiles = p.reshape(p.shape[:2] + (h, kh, w, kw))
        views = [tiles[:, :, :, i, :, j] for i in range(kh) for j in range(kw)]
    else:
        cols = xp.ascontiguousarray(_im2col(_planes(x), win, -math.inf))  # one strided pass; the rest run contiguous
        views = [cols[_ALL2 + k] for k, _ in win.offsets()]
    best = views[0].copy()
    for v in views[1:]:
        xp.maximum(best, v, out=best)  # NaN propagates, as in PyTorch
    arg = None
    if return_indices or (_grad_state.enabled and input._requires_grad):
        # the first position holding the maximum: the count of positions before it
        arg = xp.zeros(best.shape, xp.int32)
        found = views[0] == best
        for flat in range(1, len(views)):
            xp.add(arg, ~found, out=arg)
            if flat < len(views) - 1:
                found |= views[flat] == best
        nan = xp.isnan(best)
        if nan.any():  # as PyTorch's scan: a window holding NaN takes its last NaN
            for flat, v in enumerate(views):
                arg[nan & xp.isnan(v)] = flat
    lead = x.shape[:-2]
    out = record(MaxPool2DWithIndicesBackward0, best.reshape(lead + win.small), (input,), args=(arg, win, x.shape))
    if not return_indices:
        return out
    rows = xp.arange(win.small[0]).reshape(-1, 1) * win.stride[0] - win.pads[0][0] \
        + (arg // win.kernel[1]) * win.dilation[0]
    cols_ = xp.arange(win.small[1]) * win.stride[1] - win.pads[1][0] + (arg % win.kernel[1]) * win.dilation[1]
    return out, _wrap((rows * win.big[1] + cols_).astype(xp.int64).reshape(lead + win.small))


def _avg_divisor(win, count_include_pad, divisor_override, xp, dtype):
    if divisor_override:
        return divisor_override
    counts = []
    for b, k, s, (lo, _), n in zip(win.big, win.kernel, win.stride, win.pads, win.small):
        start = xp.arange(n) * s - lo
        end = xp.minimum(start + k, b + lo)
        counts.append(end - start if count_include_pad else xp.minimum(end, b) - xp.maximum(start, 0))
    return (counts[0][:, None] * counts[1][None, :]).astype(dtype)


class AvgPool2DBackward0(Node):
    def backward(self, g):
        div, win, shape = self.args
        part = (g / div).reshape((1, -1, 1, 1) + win.small)
        return col2im(part.expand((1, part.shape[1]) + win.kernel + win.small), win).reshape(shape)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True,
               divisor_override=None):
    win = _pool_window("avg_pool2d", input, kernel_size, stride, padding, 1, ceil_mode, False)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("avg_pool2d: divisor must be not zero")
    x = input._data
    xp = array_module(x)
    cols = _im2col(_planes(up(x)), win)
    total = None
    for k, _ in win.offsets():
        total = cols[_ALL2 + k].copy() if total is None else xp.add(total, cols[_ALL2 + k], out=total)
    div = _avg_divisor(win, count_include_pad, divisor_override, xp, total.dtype)
    total /= div
    div = div if divisor_override else _wrap(div.astype(x.dtype))
    return record(AvgPool2DBackward0, down(total.reshape(x.shape[:-2] + win.small), x.dtype), (input,),
                  args=(div, win, x.shape))


def _bins(b, n):
    """PyTorch's adaptive bins: [floor(i*b/n), ceil((i+1)*b/n)) for each of n outputs."""
    return [(i * b // n, -(-(i + 1) * b // n)) for i in range(n)]


def _adaptive_matrix(b, n, xp, dtype):
    """(n, b): row i averages the i-th of PyTorch's adaptive bins."""
    m = xp.zeros((n, b), dtype)
    for i, (lo, hi) in enumerate(_bins(b, n)):
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


class AdaptiveAvgPool2DBackward0(Node):
    def backward(self, g):
        rows, cols = self.args
        return rows.mT @ g @ cols


def adaptive_avg_pool2d(input, output_size):
    x = input._data
    if x.ndim not in (3, 4) or 0 in x.shape[-2:]:
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor with non-zero spatial sizes, "
                           f"but got input of size {list(x.shape)}")
    size = (output_size, output_size) if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(size) != 2:
        raise RuntimeError(f"adaptive_avg_pool2d: output_size must be 2, got {list(size)}")
    size = tuple(b if n is None else n for b, n in zip(x.shape[-2:], size))
    if any(n < 0 for n in size):
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be greater than or equal to 0 "
                           f"but received {list(size)}")
    if size == (1, 1):
        return input.mean((-1, -2), keepdim=True)  # PyTorch's shortcut (MeanBackward1)
    xp = array_module(x)
    rows, cols = (_adaptive_matrix(b, n, xp, x.dtype) for b, n in zip(x.shape[-2:], size))
    data = down(up(rows) @ up(x) @ up(cols).T, x.dtype)
    return record(AdaptiveAvgPool2DBackward0, data, (input,), args=(_wrap(rows), _wrap(cols)))


# ------------------------------------------------------ 1-D pooling via 2-D
def _one(v, name, op, default=None):
    if v is None:
        return default
    v = (v,) if isinstance(v, int) else tuple(v)
    if len(v) != 1:
        raise RuntimeError(f"{op}: {name} must be a single int or a one-element tuple, got {list(v)}")
    return v[0]


def _check_1d(op, input):
    if input._data.ndim not in (2, 3):
        raise RuntimeError(f"{op}: Expected 2D or 3D (batch mode) tensor for input, but got: "
                           f"{list(input._data.shape)}")


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False):
    _check_1d("max_pool1d", input)
    k = _one(kernel_size, "kernel_size", "max_pool1d")
    s = _one(stride if stride != [] and stride != () else None, "stride", "max_pool1d", k)
    out = max_pool2d(input.unsqueeze(-2), (1, k), (1, s), (0, _one(padding, "padding", "max_pool1d")),
                     (1, _one(dilation, "dilation", "max_pool1d")), ceil_mode, return_indices)
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)
    return out.squeeze(-2)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    _check_1d("avg_pool1d", input)
    k = _one(kernel_size, "kernel_size", "avg_pool1d")
    s = _one(stride if stride != [] and stride != () else None, "stride", "avg_pool1d", k)
    return avg_pool2d(input.unsqueeze(-2), (1, k), (1, s), (0, _one(padding, "padding", "avg_pool1d")),
                      ceil_mode, count_include_pad).squeeze(-2)


def adaptive_avg_pool1d(input, output_size):
    _check_1d("adaptive_avg_pool1d", input)
    return adaptive_avg_pool2d(input.unsqueeze(-2), (1, _one(output_size, "output_size",
                                                             "adaptive_avg_pool1d"))).squeeze(-2)


# ------------------------------------------------------------------ 3-D convolution
def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    return _conv("conv3d", 3, input, weight, bias, stride, padding, dilation, groups)


def conv_transpose3d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    return _conv_transpose("conv_transpose3d", 3, input, weight, bias, stride, padding, output_padding,
                           groups, dilation)


# ------------------------------------------------------------- unfold / fold
def _sliding_window(op, spatial, kernel_size, dilation, padding, stride):
    kernel = _ntuple(kernel_size, 2, "kernel_size", op)
    dilation = _ntuple(dilation, 2, "dilation", op)
    padding = _ntuple(padding, 2, "padding", op)
    stride = _ntuple(stride, 2, "stride", op)
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"{op}: kernel size should be greater than zero, but got kernel_size={list(kernel)}")
    _positive(op, stride, dilation)
    if any(p < 0 for p in padding):
        raise RuntimeError(f"{op}: padding should be non-negative, but got padding={list(padding)}")
    small = tuple((b + 2 * p - d * (k - 1) - 1) // s + 1
                  for b, k, d, p, s in zip(spatial, kernel, dilation, padding, stride))
    if any(n < 1 for n in small):
        raise RuntimeError(f"{op}: given input with spatial size {list(spatial)}, kernel_size={list(kernel)}, "
                           f"dilation={list(dilation)}, padding={list(padding)}, stride={list(stride)}, the "
                           f"calculated shape of the array of sliding blocks is {list(small)}, but its "
                           f"components must be at least one")
    return Window(kernel, stride, dilation, tuple((p, p) for p in padding), tuple(spatial), small)


def unfold(input, kernel_size, dilation=1, padding=0, stride=1):
    """The sliding blocks of a (N, C, H, W) (or (C, H, W)) input as (N, C * kh * kw, L)
    columns, PyTorch's ``F.unfold`` (im2col)."""
    if not isinstance(input, Tensor) or input._data.ndim not in (3, 4):
        got = input._data.ndim if isinstance(input, Tensor) else type(input).__name__
        raise RuntimeError(f"Input Error: Only 3D or 4D input Tensors are supported (got {got}D)")
    unbatched = input._data.ndim == 3
    n, c = (1,) + input._data.shape[:1] if unbatched else input._data.shape[:2]
    win = _sliding_window("unfold", input._data.shape[-2:], kernel_size, dilation, padding, stride)
    cols = (c * math.prod(win.kernel), math.prod(win.small))
    return im2col(input, win, cols if unbatched else (n,) + cols)


def fold(input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Sum (N, C * kh * kw, L) columns back onto an (N, C, *output_size) grid,
    PyTorch's ``F.fold`` (col2im, the adjoint of ``unfold``)."""
    if not isinstance(input, Tensor) or input._data.ndim not in (2, 3):
        got = input._data.ndim if isinstance(input, Tensor) else type(input).__name__
        raise RuntimeError(f"Input Error: Only unbatched (2D) or batched (3D) input Tensors are supported "
                           f"(got {got}D)")
    unbatched = input._data.ndim == 2
    size = _ntuple(output_size, 2, "output_size", "fold")
    win = _sliding_window("fold", size, kernel_size, dilation, padding, stride)
    n, ck, L = ((1,) + input._data.shape) if unbatched else input._data.shape
    k = math.prod(win.kernel)
    if ck % k:
        raise RuntimeError(f"Expected size of input's dimension 1 to be divisible by the product of "
                           f"kernel_size, but got input.size(1)={ck} and kernel_size={list(win.kernel)}")
    if L != math.prod(win.small):
        raise RuntimeError(f"Given output_size={list(size)}, kernel_size={list(win.kernel)}, "
                           f"dilation={list(win.dilation)}, padding={[lo for lo, _ in win.pads]}, "
                           f"stride={list(win.stride)}, expected size of input's dimension 2 to match the "
                           f"calculated number of sliding blocks {win.small[0]} * {win.small[1]} = "
                           f"{math.prod(win.small)}, but got input.size(2)={L}.")
    return col2im(input, win, (n, ck // k) + win.kernel + win.small,
                  (ck // k,) + size if unbatched else None)


# --------------------------------------------------------- adaptive max pooling
class AdaptiveMaxPool2DBackward0(Node):
    def backward(self, g):
        idx, shape = self.args   # flat (h * W + w) index of each output's maximum
        flat = g.reshape(g.shape[:-2] + (-1,))
        zeros = _wrap(array_module(idx._data).zeros(tuple(shape[:-2]) + (shape[-2] * shape[-1],), g._data.dtype))
        return zeros.scatter_add(-1, idx.reshape(idx.shape[:-2] + (-1,)), flat).reshape(shape)


def adaptive_max_pool2d(input, output_size, return_indices=False):
    """The maximum over PyTorch's adaptive bins; indices are flat positions in H x W
    (the first maximum of a bin in row-major order; a bin holding NaN takes its last NaN)."""
    x = input._data
    if x.ndim not in (3, 4) or 0 in x.shape[-2:]:
        raise RuntimeError(f"adaptive_max_pool2d(): Expected 3D or 4D tensor with non-zero spatial sizes, "
                           f"but got input of size {list(x.shape)}")
    size = (output_size, output_size) if isinstance(output_size, int) or output_size is None else tuple(output_size)
    if len(size) != 2:
        raise RuntimeError(f"adaptive_max_pool2d(): internal error: output_size.size() must be 2, got {len(size)}")
    (H, W) = x.shape[-2:]
    size = tuple(b if n is None else n for b, n in zip((H, W), size))
    if any(n <= 0 for n in size):
        raise RuntimeError(f"adaptive_max_pool2d: elements of output_size must be greater than 0 but received "
                           f"{list(size)}")
    xp = array_module(x)
    lead = x.shape[:-2]
    vals = xp.empty(lead + size, x.dtype)
    idx = xp.empty(lead + size, xp.int64)
    for i, (h0, h1) in enumerate(_bins(H, size[0])):
        for j, (w0, w1) in enumerate(_bins(W, size[1])):
            region = x[..., h0:h1, w0:w1].reshape(lead + (-1,))
            k = xp.argmax(region, axis=-1)
            nan = xp.isnan(region)
            if nan.any():   # the last NaN of the bin, as PyTorch's scan
                last = region.shape[-1] - 1 - xp.argmax(nan[..., ::-1], axis=-1)
                k = xp.where(nan.any(axis=-1), last, k)
            vals[..., i, j] = xp.take_along_axis(region, k[..., None], -1)[..., 0]
            idx[..., i, j] = (h0 + k // (w1 - w0)) * W + w0 + k % (w1 - w0)
    indices = _wrap(idx)
    out = record(AdaptiveMaxPool2DBackward0, vals, (input,), args=(indices, x.shape))
    return (out, indices) if return_indices else out


def adaptive_max_pool1d(input, output_size, return_indices=False):
    _check_1d("adaptive_max_pool1d", input)
    out = adaptive_max_pool2d(input.unsqueeze(-2), (1, _one(output_size, "output_size", "adaptive_max_pool1d")),
                              True)
    return (out[0].squeeze(-2), out[1].squeeze(-2)) if return_indices else out[0].squeeze(-2)


# --------------------------------------------------------------- max unpooling
def max_unpool2d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    """Place each value at its index (flat in the output's H x W) in a zero grid: the
    inverse of ``max_pool2d(..., return_indices=True)``."""
    kernel = _ntuple(kernel_size, 2, "kernel_size", "max_unpool2d")
    stride = kernel if stride is None else _ntuple(stride, 2, "stride", "max_unpool2d")
    pad = _ntuple(padding, 2, "padding", "max_unpool2d")
    x = input._data
    if x.ndim not in (3, 4):
        raise RuntimeError(f"max_unpool2d: Expected 3D or 4D input, but got input of size {list(x.shape)}")
    if tuple(indices.shape) != tuple(x.shape):
        raise RuntimeError(f"Expected shape of indices to be same as that of the input tensor "
                           f"({list(x.shape)}) but got indices tensor with shape: {list(indices.shape)}")
    default = tuple((n - 1) * s - 2 * p + k for n, s, p, k in zip(x.shape[-2:], stride, pad, kernel))
    if output_size is None:
        size = default
    else:
        size = tuple(output_size)[-2:]
        for d, (want, base, s) in enumerate(zip(size, default, stride)):
            if not base - s < want < base + s:
                raise ValueError(f"invalid output_size \"{list(size)}\" (dim {d} must be between "
                                 f"{base - s} and {base + s})")
    flat_idx = indices.reshape(indices.shape[:-2] + (-1,))
    numel = size[0] * size[1]
    if flat_idx.numel() and (int(flat_idx.max().item()) >= numel or int(flat_idx.min().item()) < 0):
        raise RuntimeError(f"max_unpool2d(): Found an invalid max index: {int(flat_idx.max().item())} (output "
                           f"volumes are of size {size[0]}x{size[1]})")
    xp = array_module(x)
    out = xp.zeros(x.shape[:-2] + (numel,), x.dtype)
    xp.put_along_axis(out, flat_idx._data, x.reshape(x.shape[:-2] + (-1,)), -1)
    return record(MaxUnpool2DBackward0, out.reshape(x.shape[:-2] + size), (input,), args=(flat_idx, x.shape))


class MaxUnpool2DBackward0(Node):
    def backward(self, g):
        flat_idx, shape = self.args
        return g.reshape(g.shape[:-2] + (-1,)).gather(-1, flat_idx).reshape(shape)


def max_unpool1d(input, indices, kernel_size, stride=None, padding=0, output_size=None):
    _check_1d("max_unpool1d", input)
    k = _one(kernel_size, "kernel_size", "max_unpool1d")
    s = _one(stride, "stride", "max_unpool1d", k)
    size = None if output_size is None else (1, tuple(output_size)[-1])
    return max_unpool2d(input.unsqueeze(-2), indices.unsqueeze(-2), (1, k), (1, s),
                        (0, _one(padding, "padding", "max_unpool1d")), size).squeeze(-2)


# ---------------------------------------------------------------- interpolate
_INTERP_DIMS = {"linear": 1, "bilinear": 2, "trilinear": 3}


def _source_index(out_n, in_n, scale, align_corners, xp, dtype):
    """Each output position's real-valued source position (PyTorch's area_pixel rule)."""
    pos = xp.arange(out_n, dtype=dtype)
    if align_corners:
        return pos * ((in_n - 1) / (out_n - 1) if out_n > 1 else 0.0)
    s = (1.0 / scale) if scale is not None else in_n / out_n
    return xp.maximum((pos + 0.5) * s - 0.5, 0.0)


def interpolate(input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                recompute_scale_factor=None, antialias=False):
    """Resize the spatial dims of an (N, C, *spatial) input: ``nearest``,
    ``nearest-exact``, ``linear``/``bilinear``/``trilinear`` (separable, PyTorch's
    source-index rules with and without ``align_corners``), ``area`` (adaptive
    average pooling)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"interpolate(): expected a Tensor, got {type(input).__name__}")
    nd = input.dim() - 2
    modes = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear", "area", "bicubic")
    if mode not in modes:
        raise NotImplementedError(f"interpolate: mode '{mode}' is not supported (supported: {', '.join(modes)})")
    if mode == "bicubic":
        raise NotImplementedError("interpolate: mode 'bicubic' is not implemented in distgrad; use 'bilinear'")
    if antialias:
        raise NotImplementedError("interpolate: antialias=True is not implemented in distgrad")
    if nd < 1 or nd > 3:
        raise NotImplementedError(f"Input Error: Only 3D, 4D and 5D input Tensors supported (got {input.dim()}D) "
                                  f"for the modes: nearest | linear | bilinear | bicubic | trilinear | area | "
                                  f"nearest-exact (got {mode})")
    if mode in _INTERP_DIMS and _INTERP_DIMS[mode] != nd:
        want = {1: "3D", 2: "4D", 3: "5D"}[_INTERP_DIMS[mode]]
        raise NotImplementedError(f"Got {input.dim()}D input, but {mode} mode needs {want} input")
    if align_corners is not None and mode not in _INTERP_DIMS:
        raise ValueError("align_corners option can only be set with the interpolating modes: "
                         "linear | bilinear | bicubic | trilinear")
    align_corners = bool(align_corners)
    spatial = tuple(input.shape[2:])
    if (size is None) == (scale_factor is None):
        raise ValueError("only one of size or scale_factor should be defined" if size is not None
                         else "either size or scale_factor should be defined")
    if size is not None:
        out = tuple(size) if isinstance(size, (tuple, list)) else (size,) * nd
        if len(out) != nd:
            raise ValueError(f"Input and output must have the same number of spatial dimensions, but got input "
                             f"with spatial dimensions of {list(spatial)} and output size of {list(out)}. Please "
                             f"provide input tensor in (N, C, d1, d2, ...,dK) format and output size in (o1, o2, "
                             f"...,oK) format.")
        scales = (None,) * nd
    else:
        scales = tuple(scale_factor) if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * nd
        if len(scales) != nd:
            raise ValueError(f"Input and scale_factor must have the same number of spatial dimensions, but got "
                             f"input with spatial dimensions of {list(spatial)} and scale_factor of shape "
                             f"{list(scales)}.")
        out = tuple(int(math.floor(float(b) * float(s))) for b, s in zip(spatial, scales))
        if recompute_scale_factor:
            scales = (None,) * nd
    if any(n <= 0 for n in out):
        raise RuntimeError(f"interpolate: output size {list(out)} must be greater than 0 (input size "
                           f"{list(spatial)})")
    if mode == "area":
        if nd == 3:
            raise NotImplementedError("interpolate: mode 'area' on 5-D input is not implemented in distgrad")
        return adaptive_avg_pool1d(input, out) if nd == 1 else adaptive_avg_pool2d(input, out)
    x = input._data
    xp = array_module(x)
    real = up(x).dtype if _kind_of(x.dtype) == "f" else xp.float64  # bfloat16: float32 weights
    plan = []   # per spatial dim: (axis, input size, [(source indices, weights or None)])
    for d, (n_in, n_out, sc) in enumerate(zip(spatial, out, scales)):
        axis = 2 + d
        if mode in ("nearest", "nearest-exact"):
            s = (1.0 / sc) if sc is not None else n_in / n_out
            pos = xp.arange(n_out, dtype=xp.float64) + (0.5 if mode == "nearest-exact" else 0.0)
            plan.append((axis, n_in, [(xp.minimum(xp.floor(pos * s).astype(xp.int64), n_in - 1), None)]))
            continue
        src = _source_index(n_out, n_in, sc, align_corners, xp, real)
        i0 = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
        lam = (src - i0).astype(real).reshape((n_out,) + (1,) * (input.dim() - axis - 1))
        plan.append((axis, n_in, [(i0, 1.0 - lam), (xp.minimum(i0 + 1, n_in - 1), lam)]))
    y = up(x)
    for axis, _, parts in plan:
        acc = None
        for idx, wt in parts:
            term = xp.take(y, idx, axis=axis)
            if wt is not None:
                term = term * wt
            acc = term if acc is None else acc + term
        y = acc
    kind = {"nearest": "Nearest", "nearest-exact": "NearestExact"}.get(mode, mode.capitalize())
    return record(_upsample_node(f"Upsample{kind}{nd}DBackward0"), down(y, x.dtype), (input,),
                  args=(plan, x.shape))


class _UpsampleBackward(Node):
    """The adjoint of an interpolation: per spatial dim, in reverse order, each output
    position's gradient added back to the source positions it read, with its weights."""

    def backward(self, g):
        plan, shape = self.args
        for axis, n_in, parts in reversed(plan):
            size = tuple(g.shape[:axis]) + (n_in,) + tuple(g.shape[axis + 1:])
            acc = _wrap(array_module(g._data).zeros(size, g._data.dtype))
            for idx, wt in parts:
                acc = acc.index_add(axis, _wrap(idx), g if wt is None else g * _wrap(down(wt, g._data.dtype)))
            g = acc
        return g


_UPSAMPLE_NODES: dict = {}


def _upsample_node(name):
    """A ``_UpsampleBackward`` class under PyTorch's node name for the mode and dims."""
    if name not in _UPSAMPLE_NODES:
        _UPSAMPLE_NODES[name] = type(name, (_UpsampleBackward,), {})
    return _UPSAMPLE_NODES[name]


# ------------------------------------------------- PyTorch's other names for the same ops
def max_pool2d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=True):
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def max_pool1d_with_indices(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                            return_indices=True):
    return max_pool1d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def adaptive_max_pool2d_with_indices(input, output_size, return_indices=True):
    return adaptive_max_pool2d(input, output_size, True)


def adaptive_max_pool1d_with_indices(input, output_size, return_indices=True):
    return adaptive_max_pool1d(input, output_size, True)


def upsample(input, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Deprecated in PyTorch in favour of ``interpolate``; the same here, with its warning."""
    import warnings

    warnings.warn("`nn.functional.upsample` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode, align_corners)


def upsample_nearest(input, size=None, scale_factor=None):
    import warnings

    warnings.warn("`nn.functional.upsample_nearest` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="nearest")


def upsample_bilinear(input, size=None, scale_factor=None):
    import warnings

    warnings.warn("`nn.functional.upsample_bilinear` is deprecated. Use `nn.functional.interpolate` instead.",
                  stacklevel=2)
    return interpolate(input, size, scale_factor, mode="bilinear", align_corners=True)
