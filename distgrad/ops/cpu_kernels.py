"""Fused elementwise and row kernels for the CPU, where numpy alone is slow: erf (numpy
has none), GELU and its gradient, softmax and LayerNorm (forward and backward) over the
last dims.

A numpy expression runs one ufunc at a time over the whole array on one core and
allocates a temporary for each step. Here each kernel is a short sequence of
in-place ufuncs that runs over blocks of whole rows on a few threads at once
(ufuncs release the GIL), as PyTorch's CPU kernels use the cores that BLAS uses.
Blocks never split a row, so results are the same bits on any number of threads.
The same kernel bodies serve CuPy arrays (erf), on the whole array at once.

Where numba is installed (a dependency; ``DISTGRAD_NUMBA=0`` turns it off), the
bodies on numpy arrays are compiled loops instead (``_jit_kernels``), one pass over
each row or element. The numpy bodies remain for CuPy, float64 softmax and numba's
absence, and the tests run both.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .. import _threads
from . import _jit_kernels
from ._util import array_module

# erf(x) = tanh(y(x)) with y = atanh(erf(x)), an odd function: y(x) = x P(x^2), with P a
# degree-9 polynomial fitted (weighted minimax) to atanh(erf(x)) / x on |x| <= 4.5, the
# weight being the sensitivity of erf's relative error to y's. One formula for every x:
# no branch, no copysign, and numpy's tanh is one of its fastest float32 functions.
# Beyond |x| = 4.5, y(4.5) > 9.02 and float32's tanh rounds to 1: inputs are clipped.
# Error in float32: below 3 ulp everywhere (np.tanh itself is within 1.4 ulp).
_ERF_P = (1.1283791788544875, 0.10277214993474014, -0.000206571973995215, -0.0005954652252447975,
          6.946153663801554e-05, 1.2609353778050184e-06, -1.272167509445884e-06,
          1.5380099079072652e-07, -8.301039530461959e-09, 1.740255282497287e-10)
_ERF_CLIP = 4.5
_INV_SQRT2 = 1 / math.sqrt(2)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)

_BLOCK = 1 << 17  # elements per task: a few arrays of this size stay in a core's cache
# Below these sizes a kernel runs on the calling thread alone: handing a span to another
# thread (30-60 us on the 2-core development machine) costs more than it saves. The
# compiled LayerNorm and softmax-gradient kernels do a few operations per element
# (0.16 and 0.12 ms per million float32 values on one core, against 0.7-0.8 for GELU
# and softmax), so they need larger arrays: alone, two threads made them slower up to
# 512 K and 1 M values.
_MIN_PARALLEL = 2 * _BLOCK
_MIN_PARALLEL_LN = 8 * _BLOCK
_MIN_PARALLEL_SOFTMAX_GRAD = 16 * _BLOCK
_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_default_threads: int | None = None
_pool_lock = threading.Lock()


def num_threads() -> int:
    """Threads for elementwise kernels: those asked for with ``set_num_threads``, else
    the launcher's per-rank thread count, else the cores this process may use."""
    global _default_threads
    if _threads._requested:
        return _threads._requested
    if _default_threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        _default_threads = int(env) if env.isdigit() and int(env) > 0 else _threads.available_cores()
    return _default_threads


def _executor(n: int) -> ThreadPoolExecutor:
    global _pool, _pool_size
    with _pool_lock:
        if _pool is None or _pool_size != n:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_size = ThreadPoolExecutor(n, thread_name_prefix="distgrad-cpu"), n
        return _pool


def _forget_pool() -> None:
    global _pool
    _pool = None  # a forked child has the pool object but none of its threads


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _launch(body, out, *inputs, row=1, min_size=None):
    """Run ``body(out, *inputs)`` over blocks of whole rows of ``row`` elements (arrays of
    one shape, seen as ``(-1, row)``), on the elementwise threads; on the whole arrays for
    CuPy or fewer than ``min_size`` elements (default ``_MIN_PARALLEL``). A row is never
    split, so results do not depend on the threads."""
    n = out.size
    threads = num_threads()
    if type(out) is not np.ndarray or n < (_MIN_PARALLEL if min_size is None else min_size) or threads < 2:
        body(*(a.reshape(-1, row) for a in (out, *inputs)))
        return out
    rows = [a.reshape(-1, row) for a in (out, *inputs)]
    nrows = n // row
    block = max(1, _BLOCK // row)
    per = -(-nrows // (threads * block)) * block  # contiguous spans of rows, one per thread

    def span(i):
        for lo in range(i, min(i + per, nrows), block):
            hi = min(lo + block, i + per, nrows)
            body(*(a[lo:hi] for a in rows))

    starts = range(0, nrows, per)
    others = [_executor(threads - 1).submit(span, i) for i in starts[1:]]
    span(starts[0])  # the calling thread takes the first span
    for f in others:
        f.result()
    return out


def compiled() -> bool:
    """Whether the numba-compiled bodies (``_jit_kernels``) serve these kernels."""
    return _jit_kernels.get() is not None


def use(x) -> bool:
    """Whether the row kernels (softmax, LayerNorm) take ``x``: a non-empty float32 or
    float64 numpy array."""
    return type(x) is np.ndarray and x.dtype in _ROW_DTYPES and x.size > 0 and x.ndim > 0


_ROW_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _contiguous(*arrays):
    """The arrays C-contiguous, with their shapes (ascontiguousarray makes a 0-d array
    1-d)."""
    xp = array_module(arrays[0])
    return [xp.ascontiguousarray(a).reshape(a.shape) for a in arrays]


def _tanh_odd_poly(out, x, scale):
    """``out = tanh(scale x P(scale^2 x^2)) = erf(scale x)``, clipping ``x`` first."""
    xp = array_module(x)
    f = x.dtype.type
    # np.clip keeps NaN; numpy 2's clip is several times faster than minimum and
    # maximum with a scalar (which take a slow loop)
    z = xp.clip(x, f(-_ERF_CLIP / scale), f(_ERF_CLIP / scale))
    s = xp.multiply(z, z)
    coef = [f(c * scale ** (2 * k + 1)) for k, c in enumerate(_ERF_P)]
    xp.multiply(s, coef[-1], out=out)
    for c in coef[-2:0:-1]:
        out += c
        out *= s
    out += coef[0]
    out *= z
    return xp.tanh(out, out=out)


# erf(x) = 2 / sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)): below |x| = 0.6 eight terms
# leave less than 1e-9 relative, where the tanh form loses up to 3 ulp to rounding (and
# tanh from exp would lose more)
_ERF_TAYLOR = [2 / math.sqrt(math.pi) * (-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(8)]
_ERF_TAYLOR_BELOW = 0.6


def _erf_constants(dtype, scale):
    """The compiled erf's constants for erf(scale x) (see _jit_bodies.erf32): the clip
    bounds, _ERF_P's coefficients scaled (rounded to ``dtype`` as _tanh_odd_poly rounds
    them), the Taylor coefficients scaled, and where the Taylor series takes over."""
    return np.array([-_ERF_CLIP / scale, _ERF_CLIP / scale]
                    + [c * scale ** (2 * k + 1) for k, c in enumerate(_ERF_P)]
                    + [c * scale ** (2 * k + 1) for k, c in enumerate(_ERF_TAYLOR)]
                    + [_ERF_TAYLOR_BELOW / scale], dtype)


def _flat(body):
    """A ``_launch`` body for an elementwise kernel: its arrays flat."""
    return lambda *arrays: body(*(a.reshape(-1) for a in arrays))


def erf(x):
    """erf of a float32 array, within 3 ulp of the exact value."""
    (x,) = _contiguous(x)
    if type(x) is np.ndarray and (jit := _jit_kernels.get()) is not None:
        k, erf32 = _erf_constants(x.dtype, 1.0), jit["erf_f32"]
        return _launch(_flat(lambda out, x: erf32(x, k, out)), np.empty_like(x), x)
    return _launch(lambda out, x: _tanh_odd_poly(out, x, 1.0), array_module(x).empty_like(x), x)


def _phi(out, x):
    """Phi(x), the standard normal CDF (1 + erf(x / sqrt 2)) / 2, into ``out``."""
    f = x.dtype.type
    _tanh_odd_poly(out, x, _INV_SQRT2)
    out *= f(0.5)
    out += f(0.5)
    return out


def _gelu_body(out, x):
    _phi(out, x)
    out *= x


def _x_pdf(out, x):
    """x phi(x) (phi: the standard normal density) into ``out``."""
    xp = array_module(x)
    f = x.dtype.type
    xp.multiply(x, x, out=out)
    out *= f(-0.5)
    xp.exp(out, out=out)
    out *= x
    out *= f(_INV_SQRT_2PI)
    return out


def _gelu_grad_body(out, x, g):
    # gelu'(x) = Phi(x) + x phi(x)
    _phi(out, x)
    out += _x_pdf(array_module(x).empty_like(x), x)
    out *= g


def _gelu_cdf_body(out, cdf, x):
    array_module(x).multiply(_phi(cdf, x), x, out=out)


def _gelu_grad_cdf_body(out, x, g, cdf):
    # gelu'(x) = Phi(x) + x phi(x), Phi kept by the forward: the same values and roundings
    # as _gelu_grad_body (a sum's order does not change its rounding), without the erf's
    # two dozen passes
    _x_pdf(out, x)
    out += cdf
    out *= g


def gelu(x, keep_cdf=False):
    """Exact (erf) GELU of a float32 array; with ``keep_cdf``, also Phi(x) (the normal
    CDF, ``gelu(x) / x``), from which ``gelu_grad`` makes the gradient in a few passes."""
    (x,) = _contiguous(x)
    xp = array_module(x)
    if xp is np and (jit := _jit_kernels.get()) is not None:
        if not keep_cdf:
            kernel = jit["gelu_f32"]
            return _launch(_flat(lambda out, x: kernel(x, out)), np.empty_like(x), x)
        cdf, kernel = np.empty_like(x), jit["gelu_cdf_f32"]
        return _launch(_flat(lambda out, cdf, x: kernel(x, out, cdf)), np.empty_like(x), cdf, x), cdf
    if not keep_cdf:
        return _launch(_gelu_body, xp.empty_like(x), x)
    cdf = xp.empty_like(x)
    return _launch(_gelu_cdf_body, xp.empty_like(x), cdf, x), cdf


def gelu_grad(x, g, cdf=None):
    """``g * gelu'(x)`` for float32 arrays of one shape; ``cdf``: Phi(x) as ``gelu``
    kept it (or None)."""
    if type(x) is np.ndarray and (jit := _jit_kernels.get()) is not None:
        if cdf is None:
            x, g = _contiguous(x, g)
            kernel = jit["gelu_grad_f32"]
            return _launch(_flat(lambda out, x, g: kernel(x, g, out)), np.empty_like(x), x, g)
        x, g, cdf = _contiguous(x, g, cdf)
        kernel = jit["gelu_grad_cdf_f32"]
        return _launch(_flat(lambda out, x, g, cdf: kernel(x, g, cdf, out)), np.empty_like(x), x, g, cdf)
    if cdf is None:
        x, g = _contiguous(x, g)
        return _launch(_gelu_grad_body, array_module(x).empty_like(x), x, g)
    x, g, cdf = _contiguous(x, g, cdf)
    return _launch(_gelu_grad_cdf_body, array_module(x).empty_like(x), x, g, cdf)


def gelu_tanh(x):
    """GELU's tanh form of a float32 numpy array by the compiled kernel (one pass, on
    the elementwise threads), or None where it does not apply (the caller's numpy
    body then runs)."""
    if type(x) is not np.ndarray or x.dtype != np.float32 or (jit := _jit_kernels.get()) is None:
        return None
    (x,) = _contiguous(x)
    kernel = jit["gelu_tanh_f32"]
    return _launch(_flat(lambda out, x: kernel(x, out)), np.empty_like(x), x)


def gelu_tanh_grad(x, g):
    """``g * gelu'(x)`` for GELU's tanh form, float32 numpy arrays of one shape, by the
    compiled kernel, or None where it does not apply."""
    if (type(x) is not np.ndarray or type(g) is not np.ndarray or x.dtype != np.float32
            or g.dtype != np.float32 or x.shape != g.shape or (jit := _jit_kernels.get()) is None):
        return None
    x, g = _contiguous(x, g)
    kernel = jit["gelu_tanh_grad_f32"]
    return _launch(_flat(lambda out, x, g: kernel(x, g, out)), np.empty_like(x), x, g)


def _softmax_body(out, x):
    xp = array_module(x)
    # fmax skips NaN where maximum's reduction checks for it, and is faster; a row with
    # a NaN still comes out all NaN (its exp is NaN, and so is the row's sum)
    xp.subtract(x, xp.fmax.reduce(x, axis=1)[:, None], out=out)
    xp.exp(out, out=out)
    out /= _row_sums(out)[:, None]


def _softmax_grad_body(out, y, g):
    # y (g - sum(g y)), the gradient of softmax over a row
    xp = array_module(y)
    xp.multiply(g, y, out=out)
    s = _row_sums(out)
    xp.subtract(g, s[:, None], out=out)
    out *= y


def softmax(x, scale=None, bias=None, out=None):
    """Softmax over the last dim of a float array; of ``x * scale + bias`` when given,
    ``bias`` being an ``(L, S)`` array (a causal mask of 0 and -inf) added to each of
    the ``(L, S)`` matrices that make up ``x``, in the order and with the roundings of
    a multiply, an add and a softmax, without their temporaries. ``out``: a C-contiguous
    array of ``x``'s shape to write into (``x`` itself for in place)."""
    (x,) = _contiguous(x)
    xp = array_module(x)
    S = x.shape[-1]
    if out is None:
        out = xp.empty_like(x)
    if x.dtype == np.float32 and type(x) is np.ndarray and (jit := _jit_kernels.get()) is not None:
        L = bias.shape[0] if bias is not None else 1
        b = np.ascontiguousarray(bias, x.dtype) if bias is not None else np.zeros((1, S), x.dtype)
        f, kernel = x.dtype.type(1.0 if scale is None else scale), jit["softmax_f32"]
        # whole (L, S) matrices per block: a block's row r takes the bias row r % L
        inplace = out.ctypes.data == x.ctypes.data and out.shape == x.shape
        return _launch(lambda out, x: kernel(x.reshape(-1, S), b, f, out.reshape(-1, S), inplace), out, x,
                       row=L * S)
    if scale is None and bias is None:
        return _launch(_softmax_body, out, x, row=S)
    f = x.dtype.type
    L = bias.shape[0] if bias is not None else 1

    def body(out, x):
        src = x
        if scale is not None:
            xp.multiply(x, f(scale), out=out)
            src = out
        if bias is not None:
            xp.add(src.reshape(-1, L, S), bias, out=out.reshape(-1, L, S))
        rows = out.reshape(-1, S)
        _softmax_body(rows, rows)

    return _launch(body, out, x, row=L * S)


def softmax_grad(y, g, scale=None):
    """The input's gradient of softmax over the last dim, from its output ``y``; times
    ``scale`` when given (the gradient of ``softmax(x * scale + bias)``)."""
    y, g = _contiguous(y, g)
    xp = array_module(y)
    if xp is np and (jit := _jit_kernels.get()) is not None:
        k = np.array([1.0 if scale is None else scale], y.dtype)
        sg = jit["softmax_grad"]
        return _launch(lambda out, y, g: sg(y, g, k, out), np.empty_like(y), y, g, row=y.shape[-1],
                       min_size=_MIN_PARALLEL_SOFTMAX_GRAD)
    if scale is None:
        body = _softmax_grad_body
    else:
        f = y.dtype.type

        def body(out, y, g):
            _softmax_grad_body(out, y, g)
            out *= f(scale)

    return _launch(body, array_module(y).empty_like(y), y, g, row=y.shape[-1])


def _rows_f32(x, d):
    """The compiled kernels, where the float32 log_softmax ones take ``x`` over dim
    ``d`` (the last, C-contiguous numpy); else None."""
    if (type(x) is np.ndarray and x.dtype == np.float32 and x.size and d == x.ndim - 1
            and x.flags.c_contiguous):
        return _jit_kernels.get()
    return None


def column_sums(a):
    """``a.sum(axis=0)`` of a 2-D C-contiguous float32 or float64 numpy array by a
    compiled loop, the same bits as numpy's (row after row) in one pass, where numpy's
    reduction machinery runs at a third of the memory's speed (a Linear's bias
    gradient); None where it does not apply."""
    if (type(a) is not np.ndarray or a.ndim != 2 or a.dtype not in _ROW_DTYPES or not a.shape[0]
            or not a.flags.c_contiguous):
        return None
    jit = _jit_kernels.get()
    if jit is None:
        return None
    out = np.empty(a.shape[1], a.dtype)
    jit["column_sums"](a, out)
    return out


def log_softmax(x, d):
    """log_softmax of a float32 array over its last dim ``d`` by the compiled row kernel
    (one pass per step of a row, no temporaries), or None where it does not apply."""
    jit = _rows_f32(x, d)
    if jit is None:
        return None
    c = x.shape[-1]
    kernel = jit["log_softmax_f32"]

    def body(out, x):
        kernel(x, out, np.empty(c, np.float32))

    return _launch(body, np.empty_like(x), x, row=c)


def log_softmax_grad(y, g, d):
    """``g - exp(y) * sum(g)`` over the last dim ``d`` (log_softmax's gradient from its
    output) by the compiled row kernel, or None where it does not apply."""
    jit = _rows_f32(y, d)
    if jit is None or type(g) is not np.ndarray or g.dtype != y.dtype or g.shape != y.shape:
        return None
    (g,) = _contiguous(g)
    kernel = jit["log_softmax_grad_f32"]
    return _launch(lambda out, y, g: kernel(y, g, out), np.empty_like(y), y, g, row=y.shape[-1])


def _row_sums(a):
    """The sum of each row of a 2-D float array. For rows of up to a few thousand
    elements by einsum's summing loop, 3-4x faster than numpy's reduction along short
    rows, and a row's sum does not depend on the rows around it (a BLAS product with a
    vector of ones is faster still, but its result depends on where a row falls in the
    block, which would make the threaded kernels' bits depend on the thread count)."""
    if a.shape[1] > 4096:  # a long row: numpy's pairwise sum rounds less
        return a.sum(axis=1)
    return array_module(a).einsum("ij->i", a)


def _row_means(a):
    """The mean of each row of a 2-D float array, as a column."""
    m = _row_sums(a)
    m *= a.dtype.type(1 / a.shape[1])
    return m[:, None]


def _centered(x, eps):
    """``x - mean`` of each row, ``1 / sqrt(var + eps)`` (a column) and a scratch
    array of ``x``'s shape."""
    xp = array_module(x)
    xc = x - _row_means(x)
    sq = xp.multiply(xc, xc)
    rstd = _row_means(sq)
    rstd += x.dtype.type(eps)
    xp.sqrt(rstd, out=rstd)
    return xc, xp.reciprocal(rstd, out=rstd), sq


def _ln_constants(dtype, eps, row, weight):
    """The compiled LayerNorm kernels' constants [1, eps, 1 / row] and weight (ones
    when there is none)."""
    w = weight if weight is not None else np.ones(row, dtype)
    return np.array([1.0, eps, 1.0 / row], dtype), w


def layer_norm(x, row, weight, bias, eps):
    """LayerNorm over the last ``row`` elements of ``x``, with optional weight and bias
    (arrays of ``row`` elements, or None)."""
    (x,) = _contiguous(x)
    if type(x) is np.ndarray and (jit := _jit_kernels.get()) is not None:
        k, w = _ln_constants(x.dtype, eps, row, weight)
        b = bias if bias is not None else np.zeros(row, x.dtype)
        fwd = jit["ln_fwd"]
        return _launch(lambda out, x: fwd(x, w, b, k, out), np.empty_like(x), x, row=row,
                       min_size=_MIN_PARALLEL_LN)

    def body(out, x):
        xc, rstd, _ = _centered(x, eps)
        array_module(x).multiply(xc, rstd, out=out)
        if weight is not None:
            out *= weight
        if bias is not None:
            out += bias

    return _launch(body, array_module(x).empty_like(x), x, row=row)


def layer_norm_grad(x, g, row, weight, eps, need_input, need_weight):
    """The gradients of LayerNorm over the last ``row`` elements: the input's (or None)
    and ``g * xhat`` (or None), whose column sums are the weight's gradient."""
    x, g = _contiguous(x, g)
    xp = array_module(x)
    gxh = xp.empty_like(x) if need_weight else None
    gx = xp.empty_like(x) if need_input else None
    if xp is np and (jit := _jit_kernels.get()) is not None:
        k, w = _ln_constants(x.dtype, eps, row, weight)
        bwd, none, no = jit["ln_bwd"], np.empty((1, 1), x.dtype), np.empty(1, x.dtype)
        if gx is None:
            _launch(lambda gxh, x, g: bwd(x, g, w, k, none, gxh, no, no, False, True, False), gxh, x, g,
                    row=row, min_size=_MIN_PARALLEL_LN)
        elif gxh is None:
            _launch(lambda gx, x, g: bwd(x, g, w, k, gx, none, no, no, True, False, False), gx, x, g,
                    row=row, min_size=_MIN_PARALLEL_LN)
        else:
            _launch(lambda gx, x, g, gxh: bwd(x, g, w, k, gx, gxh, no, no, True, True, False), gx, x, g, gxh,
                    row=row, min_size=_MIN_PARALLEL_LN)
        return gx, gxh

    def body(out, x, g, *gxh):
        xc, rstd, tmp = _centered(x, eps)
        xc *= rstd                                           # xhat
        if gxh:
            xp.multiply(g, xc, out=gxh[0])
        if out is None:
            return
        gxhat = g * weight if weight is not None else g
        xp.multiply(gxhat, xc, out=tmp)
        proj = _row_means(tmp)
        xp.subtract(gxhat, _row_means(gxhat), out=out)
        xp.multiply(xc, proj, out=tmp)
        out -= tmp
        out *= rstd

    if gx is None:
        _launch(lambda gxh, x, g: body(None, x, g, gxh), gxh, x, g, row=row)
    else:
        _launch(body, gx, x, g, *((gxh,) if gxh is not None else ()), row=row)
    return gx, gxh


def layer_norm_grad_sums(x, g, row, weight, eps, need_input, need_weight, need_bias):
    """``(gx, dw, db)``: the input's gradient of LayerNorm over the last ``row``
    elements, and the weight's and the bias's (the column sums of ``g * xhat`` and of
    ``g``), each None where not needed. Below the size at which the row kernels go
    parallel the compiled kernel adds the column sums up row by row as it goes (half
    the time of writing ``g * xhat`` out and summing it and ``g`` with numpy: 0.08
    against 0.16 ms for 2048 rows of 128); above, and without numba, the sums are
    numpy's over ``layer_norm_grad``'s ``g * xhat``. Either way the bits do not depend
    on the thread count."""
    x, g = _contiguous(x, g)
    jit = _jit_kernels.get() if type(x) is np.ndarray else None
    if jit is not None and x.size < _MIN_PARALLEL_LN and (need_weight or need_bias):
        k, w = _ln_constants(x.dtype, eps, row, weight)
        x2, g2 = x.reshape(-1, row), g.reshape(-1, row)
        gx = np.empty_like(x) if need_input else None
        dw, db = np.zeros(row, x.dtype), np.zeros(row, x.dtype)
        none = np.empty((1, 1), x.dtype)
        jit["ln_bwd"](x2, g2, w, k, gx.reshape(-1, row) if need_input else none, none, dw, db, need_input,
                      False, True)
        return gx, (dw if need_weight else None), (db if need_bias else None)
    gx = gxh = None
    if need_input or need_weight:
        gx, gxh = layer_norm_grad(x, g, row, weight, eps, need_input, need_weight)
    dw = gxh.reshape(-1, row).sum(axis=0) if need_weight else None
    db = g.reshape(-1, row).sum(axis=0) if need_bias else None
    return gx, dw, db


# ------------------------------------------------------------------ attention
# softmax(q k^T * scale + causal mask) v as one node: the batched products on the calling
# thread (BLAS), the softmax rows (``softmax``, ``softmax_grad``) on the elementwise
# threads. With the causal mask the
# query rows go in blocks of ``_CAUSAL_BLOCK`` and each block's products and softmax stop
# at the last key its rows may see: with 256 rows that is 3/4 of the work and of the
# kept weights, with 1024 rows about 5/8; fewer than 256 rows make one block. Blocks of
# 128 rows ran 10-17 % faster than blocks of 64 in the gradient from 128 to 512 rows
# (64 rows make each product a quarter of the size for twice the calls, and at 128
# rows skipping a quarter of the work did not pay for that). (Spreading blocks of batch entries, products
# included, over the elementwise threads with BLAS on one thread meanwhile ran 1.4x
# faster alone but 5 % slower inside a training step, where BLAS's own threads still
# spin after each product: it was not kept.)

_CAUSAL_BLOCK = 128


def _row_blocks(L: int, S: int, causal: bool) -> list:
    """``(r0, r1, kend)``: the query rows of each block and the keys they may see."""
    if not causal:
        return [(0, L, S)]
    if L < 2 * _CAUSAL_BLOCK:
        return [(0, L, min(L, S))]
    return [(r0, min(r0 + _CAUSAL_BLOCK, L), min(r0 + _CAUSAL_BLOCK, L, S)) for r0 in range(0, L, _CAUSAL_BLOCK)]


def _weights_blocks(p, lead, L, S, causal):
    """Views of the flat weights buffer ``p``: for each row block, ``(r0, r1, kend)``
    and its ``(lead..., rows, kend)`` weights (each block contiguous)."""
    views, at, n = [], 0, math.prod(lead)
    for r0, r1, kend in _row_blocks(L, S, causal):
        size = n * (r1 - r0) * kend
        views.append((r0, r1, kend, p[at:at + size].reshape(lead + (r1 - r0, kend))))
        at += size
    return views


def _weights_size(lead, L, S, causal) -> int:
    return math.prod(lead) * sum((r1 - r0) * kend for r0, r1, kend in _row_blocks(L, S, causal))


def attention(q, k, v, scale, bias):
    """``(out, p)`` for numpy float arrays ``q``, ``k``, ``v`` of shapes ``(..., L, D)``,
    ``(..., S, D)``, ``(..., S, Dv)`` with the same leading dims (read in place through
    their strides): ``out = softmax(q k^T * scale + bias) v`` over the last dim, ``bias``
    being the ``(L, S)`` causal mask (0 and -inf) or None, and ``p`` the weights, a flat
    buffer of row blocks for ``attention_grad`` (a block's keys past what its rows may
    see are left out). With leading dims (batch, heads), ``out`` is laid
    out (batch, L, heads, Dv), so ``out.transpose(1, 2).reshape(batch, L, -1)`` is a view
    (as PyTorch's flash attention lays it out)."""
    lead, L, S = q.shape[:-2], q.shape[-2], k.shape[-2]
    causal = bias is not None
    p = np.empty(_weights_size(lead, L, S, causal), q.dtype)
    if len(lead) == 2:  # (batch, heads)
        out = np.empty((lead[0], L, lead[1], v.shape[-1]), q.dtype).swapaxes(1, 2)
    else:
        out = np.empty(lead + (L, v.shape[-1]), q.dtype)
    for r0, r1, kend, w in _weights_blocks(p, lead, L, S, causal):
        np.matmul(q[..., r0:r1, :], np.swapaxes(k[..., :kend, :], -1, -2), out=w)
        rows = w.reshape(-1, kend)
        softmax(rows, scale, np.ascontiguousarray(bias[r0:r1, :kend]) if causal else None, out=rows)
        np.matmul(w, v[..., :kend, :], out=out[..., r0:r1, :])
    return out, p


def _into_or_add(d, i: int, kend: int, a, b) -> None:
    """The first (``i == 0``) writes ``a @ b`` into ``d``'s first ``kend`` rows and zeros
    after them; the others add to those rows."""
    if i == 0:
        d[..., kend:, :] = 0
        np.matmul(a, b, out=d[..., :kend, :])
    else:
        d[..., :kend, :] += np.matmul(a, b)


def _grads_like_qkv(q, k, v):
    """Where q, k and v are heads split from one fused projection's output (B, L, 3C)
    and viewed (B, H, L, D), as in ``qkv(x).split(C, 2)`` then ``.view(B, L, H,
    D).transpose(1, 2)``: their gradients as the same views of one new (B, L, 3C)
    buffer, so that the split's backward gets it back without concatenating them
    (``shape._adjacent_pieces``); else (None, None, None)."""
    if q.ndim != 4 or not (q.shape == k.shape == v.shape) or not (q.strides == k.strides == v.strides):
        return None, None, None
    B, H, L, D = q.shape
    e = q.itemsize
    step = k.ctypes.data - q.ctypes.data
    if (step != H * D * e or v.ctypes.data - k.ctypes.data != step
            or q.strides != (L * 3 * H * D * e, D * e, 3 * H * D * e, e)):
        return None, None, None
    buf = np.empty((B, L, 3, H, D), q.dtype)
    return tuple(buf[:, :, i].transpose(0, 2, 1, 3) for i in range(3))


def attention_grad(q, k, v, p, g, scale, causal, need=(True, True, True)):
    """``(dq, dk, dv)`` of ``attention`` from its weights buffer ``p`` and the output's
    gradient ``g`` (None where ``need`` says so). Laid out as each input is (a
    transposed view of a projection: its gradient flows back through the transpose and
    view without a copy)."""
    lead, L, S = q.shape[:-2], q.shape[-2], k.shape[-2]
    dq, dk, dv = _grads_like_qkv(q, k, v) if all(need) else (None, None, None)
    if dq is None:
        dq, dk, dv = (np.empty_like(t, dtype=q.dtype) if n else None for t, n in zip((q, k, v), need))
    # The last block sees the most keys: it writes dk and dv (zeros past its keys: keys
    # no query may see), the blocks before it add theirs.
    for i, (r0, r1, kend, w) in enumerate(reversed(_weights_blocks(p, lead, L, S, causal))):
        gb, qb = g[..., r0:r1, :], q[..., r0:r1, :]
        if dv is not None:
            _into_or_add(dv, i, kend, np.swapaxes(w, -1, -2), gb)
        if dq is None and dk is None:
            continue
        dp = np.matmul(gb, np.swapaxes(v[..., :kend, :], -1, -2))
        ds = softmax_grad(w.reshape(-1, kend), dp.reshape(-1, kend), scale).reshape(dp.shape)
        if dq is not None:
            np.matmul(ds, k[..., :kend, :], out=dq[..., r0:r1, :])
        if dk is not None:
            _into_or_add(dk, i, kend, np.swapaxes(ds, -1, -2), qb)
    return dq, dk, dv
