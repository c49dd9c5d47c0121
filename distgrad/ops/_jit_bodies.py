"""The numba kernels of ``_jit_kernels`` (see there), at module level so that numba's
cache holds them: a cached function that calls another compiled function is only
found again when that callee is a module global. Importing this module imports numba.
"""
import numpy as np
import numba


def _writable_cache() -> bool:
    """Whether numba can cache here (beside this file or in its user cache): if not,
    every process compiles for itself rather than failing."""
    try:
        numba.njit(cache=True)(lambda: 0)
    except RuntimeError:
        return False
    return True


_CACHE = _writable_cache()


def _jit(**options):
    return numba.njit(nogil=True, cache=_CACHE, boundscheck=False, **options)


# row kernels: the row sums reassociated (vectorized); NaN and infinity keep IEEE meaning
rows = _jit(fastmath={"reassoc", "contract"})
# elementwise passes: no fastmath, so each operation rounds as numpy's ufunc does and
# the results are numpy's bits
exact = _jit()

# k: an array of the rows' dtype holding constants ([1, eps, 1 / row length] for
# LayerNorm); constants in the rows' dtype keep float32 arithmetic in float32 (a
# Python float would promote it to float64).

# the row's largest value with NaN assumed absent, so that it vectorizes: a row with
# a NaN comes out all NaN whatever this returns (its exp is NaN, and so is the sum),
# which is what numpy's fmax.reduce gives too
@_jit(fastmath={"nnan", "nsz", "reassoc"})
def row_max(a):
    m = a[0]
    for j in range(1, a.size):
        m = max(m, a[j])
    return m


@rows
def row_stats(a, one, eps, inv_c):
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


@rows
def ln_fwd(x, w, b, k, out):
    n, c = x.shape
    one, eps, inv_c = k[0], k[1], k[2]
    for i in range(n):
        m, r = row_stats(x[i], one, eps, inv_c)
        for j in range(c):
            out[i, j] = (x[i, j] - m) * r * w[j] + b[j]


@rows
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


@rows
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


@rows
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


KERNELS = {"ln_fwd": ln_fwd, "ln_bwd": ln_bwd, "softmax_grad": softmax_grad,
           "shift_rows": shift_rows, "sub_row_max": sub_row_max, "normalize_rows": normalize_rows,
           "odd_poly": odd_poly, "gelu_finish": gelu_finish, "minus_half_square": minus_half_square,
           "gelu_grad_finish": gelu_grad_finish, "phi_in_place": phi_in_place}
