"""CPU kernels compiled by numba: LayerNorm forward and backward and softmax's gradient
in one pass over each row, and the arithmetic of erf, GELU, its gradient and softmax
in one pass each, where the numpy bodies in ``cpu_kernels`` take a dozen to thirty
passes over memory.

numba without Intel's SVML calls the scalar libm for exp and tanh (5-40x slower than
numpy's SIMD loops), so those stay numpy's: ``cpu_kernels`` runs compiled pass, numpy
exp or tanh, compiled pass over chunks small enough to stay in cache. The elementwise
kernels compile without fastmath, so every operation rounds as numpy's ufunc does and
erf and GELU give the numpy bodies' bits. The row kernels reassociate their row sums
(``fastmath`` with reassociation and contraction only: NaN and infinity keep IEEE
meaning), which lets LLVM vectorize them: they agree with numpy's to float rounding.
Every kernel runs serially on a block of whole rows and releases the GIL;
``cpu_kernels._launch`` spreads the blocks over its threads, so a row's result does
not depend on the thread count.

numba is imported on first use; ``DISTGRAD_NUMBA=0`` (or numba not installed, or its
import failing) keeps the numpy bodies. Compiled code is cached next to this file
(``__pycache__``) or in numba's user cache, so a machine compiles once (about 10 s
for all kernels and dtypes) and later processes take about 0.3 s to load numba and
the cache.
"""
from __future__ import annotations

import os
import warnings

import numpy as np

_kernels = None      # the compiled functions, once loaded
_failed = False      # numba missing or broken: numpy bodies from then on
_FASTMATH = {"reassoc", "contract"}


def get():
    """The compiled kernels by name, or None (DISTGRAD_NUMBA=0, or numba not importable):
    the caller then uses its numpy bodies."""
    return _kernels if _kernels is not None else _load()


def _setting() -> bool:
    raw = os.environ.get("DISTGRAD_NUMBA", "1").strip()
    if raw not in ("0", "1"):
        raise ValueError(f"DISTGRAD_NUMBA={raw!r}: expected 1 (compile the CPU row kernels with "
                         "numba, the default) or 0 (numpy bodies only)")
    return raw == "1"


def _load():
    global _kernels, _failed
    if _kernels is not None or _failed:
        return _kernels
    if not _setting():
        _failed = True
        return None
    try:
        import numba
    except Exception as e:  # not installed, or an llvmlite that does not load
        if not isinstance(e, ImportError):
            warnings.warn(f"distgrad: numba failed to import ({type(e).__name__}: {e}); the CPU row "
                          "kernels use numpy. Set DISTGRAD_NUMBA=0 to silence this.", RuntimeWarning,
                          stacklevel=3)
        _failed = True
        return None
    _kernels = _compile(numba)
    return _kernels


def _row_max(a):
    m = a[0]
    for j in range(1, a.size):
        m = max(m, a[j])
    return m


def _row_stats(a, one, eps, inv_c):
    """A row's mean and 1 / sqrt(variance + eps)."""
    s = one - one
    for j in range(a.size):
        s += a[j]
    m = s * inv_c
    v = one - one
    for j in range(a.size):
        d = a[j] - m
        v += d * d
    return m, one / np.sqrt(v * inv_c + eps)


def _compile(numba):
    try:
        return _build(numba, cache=True)
    except RuntimeError:  # no writable cache location: compile in each process
        return _build(numba, cache=False)


def _build(numba, cache):
    jit = numba.njit(nogil=True, cache=cache, fastmath=_FASTMATH, boundscheck=False)
    row_stats = jit(_row_stats)
    # elementwise passes: no fastmath, so each operation rounds as numpy's ufunc does
    # and the results are numpy's bits
    exact = numba.njit(nogil=True, cache=cache, boundscheck=False)

    # k: an array of the rows' dtype holding constants ([1, eps, 1 / row length] for
    # LayerNorm); constants in the rows' dtype keep float32 arithmetic in float32 (a
    # Python float would promote it to float64).

    @jit
    def ln_fwd(x, w, b, k, out):
        n, c = x.shape
        one, eps, inv_c = k[0], k[1], k[2]
        for i in range(n):
            m, r = row_stats(x[i], one, eps, inv_c)
            for j in range(c):
                out[i, j] = (x[i, j] - m) * r * w[j] + b[j]

    @jit
    def ln_bwd(x, g, w, k, gx, gxh, need_gx, need_gxh):
        # xhat = (x - mean) rstd; gx = rstd (g w - mean(g w) - xhat mean(g w xhat));
        # gxh = g xhat, whose column sums are the weight's gradient
        n, c = x.shape
        one, eps, inv_c = k[0], k[1], k[2]
        for i in range(n):
            m, r = row_stats(x[i], one, eps, inv_c)
            s1 = one - one
            s2 = one - one
            for j in range(c):
                xh = (x[i, j] - m) * r
                gw = g[i, j] * w[j]
                s1 += gw
                s2 += gw * xh
                if need_gxh:
                    gxh[i, j] = g[i, j] * xh
            if need_gx:
                s1 *= inv_c
                s2 *= inv_c
                for j in range(c):
                    xh = (x[i, j] - m) * r
                    gx[i, j] = r * (g[i, j] * w[j] - s1 - xh * s2)

    @jit
    def softmax_grad(y, g, k, out):
        # y (g - sum(g y)) scale over each row; k = [scale]
        n, c = y.shape
        scale = k[0]
        for i in range(n):
            s = scale - scale
            for j in range(c):
                s += g[i, j] * y[i, j]
            for j in range(c):
                out[i, j] = y[i, j] * (g[i, j] - s) * scale

    # the row's largest value with NaN assumed absent, so that it vectorizes: a row with
    # a NaN comes out all NaN whatever this returns (its exp is NaN, and so is the sum),
    # which is what numpy's fmax.reduce gives too
    row_max = numba.njit(nogil=True, cache=cache, fastmath={"nnan", "nsz", "reassoc"},
                         boundscheck=False)(_row_max)

    @exact
    def shift_rows(x, bias, k, r0, out):
        # out = x * scale + bias[row % L] - (the row's largest), before exp: k = [scale]
        n, c = x.shape
        scale = k[0]
        L = bias.shape[0]
        for i in range(n):
            br = (r0 + i) % L
            for j in range(c):
                out[i, j] = x[i, j] * scale + bias[br, j]
            m = row_max(out[i])
            for j in range(c):
                out[i, j] = out[i, j] - m

    @exact
    def sub_row_max(x, out):
        n, c = x.shape
        for i in range(n):
            m = row_max(x[i])
            for j in range(c):
                out[i, j] = x[i, j] - m

    @jit
    def normalize_rows(out):
        n, c = out.shape
        for i in range(n):
            s = out[i, 0] - out[i, 0]
            for j in range(c):
                s += out[i, j]
            for j in range(c):
                out[i, j] = out[i, j] / s

    @exact
    def odd_poly(x, k, out):
        # out = z P(z^2), z = x clipped to [k0, k1], P's coefficients k2.. (lowest first),
        # by Horner's rule in the order cpu_kernels._tanh_odd_poly takes
        lo, hi = k[0], k[1]
        c0, c1, c2, c3, c4, c5, c6, c7, c8, c9 = k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11]
        for i in range(x.size):
            z = x[i]
            if z < lo:
                z = lo
            elif z > hi:
                z = hi
            s = z * z
            p = s * c9
            p = (p + c8) * s
            p = (p + c7) * s
            p = (p + c6) * s
            p = (p + c5) * s
            p = (p + c4) * s
            p = (p + c3) * s
            p = (p + c2) * s
            p = (p + c1) * s
            out[i] = (p + c0) * z

    @exact
    def gelu_finish(t, x, half, cdf, out):
        # cdf = t / 2 + 1/2 (Phi(x) from t = erf(x / sqrt 2)), out = cdf x
        for i in range(x.size):
            p = t[i] * half + half
            cdf[i] = p
            out[i] = p * x[i]

    @exact
    def minus_half_square(x, minus_half, out):
        for i in range(x.size):
            out[i] = x[i] * x[i] * minus_half

    @exact
    def gelu_grad_finish(e, x, g, cdf, c, out):
        # out = (e x c + Phi) g: e = exp(-x^2 / 2), c = 1 / sqrt(2 pi)
        for i in range(x.size):
            out[i] = (e[i] * x[i] * c + cdf[i]) * g[i]

    @exact
    def phi_in_place(t, half):
        for i in range(t.size):
            t[i] = t[i] * half + half

    return {"ln_fwd": ln_fwd, "ln_bwd": ln_bwd, "softmax_grad": softmax_grad,
            "shift_rows": shift_rows, "sub_row_max": sub_row_max, "normalize_rows": normalize_rows, "odd_poly": odd_poly,
            "gelu_finish": gelu_finish, "minus_half_square": minus_half_square,
            "gelu_grad_finish": gelu_grad_finish, "phi_in_place": phi_in_place}
