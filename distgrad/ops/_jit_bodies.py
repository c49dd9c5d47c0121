"""The numba kernels of ``_jit_kernels`` (see there), at module level so that numba's
cache holds them: a cached function that calls another compiled function is only
found again when that callee is a module global. Importing this module imports numba.
"""
import math

import llvmlite.ir
import numba
import numba.extending
import numpy as np


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
    # error_model="numpy": a float division by zero gives inf or NaN as in numpy, not a
    # ZeroDivisionError check that keeps the loop from vectorizing
    return numba.njit(nogil=True, cache=_CACHE, boundscheck=False, error_model="numpy", **options)


# row kernels: the row sums reassociated (vectorized); NaN and infinity keep IEEE meaning
rows = _jit(fastmath={"reassoc", "contract"})
# elementwise passes: no fastmath, so each operation rounds as written
exact = _jit()
# elementwise approximations (exp, erf, GELU, softmax): a multiply and an add may fuse
# into one fused multiply-add, which rounds once instead of twice (never less accurate;
# a third faster where the hardware has FMA). The bounds stated for them hold either way.
fused = _jit(fastmath={"contract"})
# scalar functions the loops call: inlined by numba, so that the loops vectorize
scalar = _jit(inline="always")

# the row's largest value, NaN assumed absent: a row with a NaN comes out all NaN
# whatever this returns (its exp is NaN, and so is the sum), which is what numpy's
# fmax.reduce gives too. LLVM does not vectorize a max reduction here, so eight
# running maxima stand in for the lanes: half the time of one (0.06 against 0.12 ms
# for 4096 rows of 128), and the same value, a max being exact in any order.
@_jit(fastmath={"nnan", "nsz"})
def row_max(a):
    c = a.size
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = a[0]
    j = 0
    while j + 8 <= c:
        m0 = max(m0, a[j])
        m1 = max(m1, a[j + 1])
        m2 = max(m2, a[j + 2])
        m3 = max(m3, a[j + 3])
        m4 = max(m4, a[j + 4])
        m5 = max(m5, a[j + 5])
        m6 = max(m6, a[j + 6])
        m7 = max(m7, a[j + 7])
        j += 8
    while j < c:
        m0 = max(m0, a[j])
        j += 1
    return max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))


@rows
def row_sum(a):
    s = a[0] - a[0]
    for j in range(a.size):
        s += a[j]
    return s


@rows
def row_stats(a, one, eps, inv_c):
    """A row's mean and 1 / sqrt(variance + eps)."""
    m = row_sum(a) * inv_c
    v = one - one
    for j in range(a.size):
        d = a[j] - m
        v += d * d
    return m, one / np.sqrt(v * inv_c + eps)


# k: an array of the rows' dtype holding constants ([1, eps, 1 / row length] for
# LayerNorm); constants in the rows' dtype keep float32 arithmetic in float32 (a
# Python float would promote it to float64).

@rows
def ln_fwd(x, w, b, k, out):
    n, c = x.shape
    one, eps, inv_c = k[0], k[1], k[2]
    for i in range(n):
        m, r = row_stats(x[i], one, eps, inv_c)
        for j in range(c):
            out[i, j] = (x[i, j] - m) * r * w[j] + b[j]


@rows
def ln_bwd(x, g, w, k, gx, gxh, dw, db, need_gx, need_gxh, need_sums):
    # xhat = (x - mean) rstd; gx = rstd (g w - mean(g w) - xhat mean(g w xhat));
    # gxh = g xhat, whose column sums are the weight's gradient. With need_sums (rows
    # run serially) each row's g xhat and g are added to dw and db, row after row,
    # instead of g xhat being written out. Outputs not needed may be 1x1 stand-ins.
    # No loop stores into an array it is not given (each output has its own loop), and
    # the row sums' loop stores nothing: LLVM vectorizes a loop that stores behind a
    # runtime check that the stores overlap none of the loads, taking each array's range
    # from its indexing; a stand-in's runs past its end into whatever the heap put next,
    # and where that is x, g or w the scalar loop runs instead, summing in another order
    # (the bits would depend on where arrays happen to lie)
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
            for j in range(c):
                gxh[i, j] = g[i, j] * ((x[i, j] - m) * r)
        if need_sums:
            for j in range(c):
                dw[j] += g[i, j] * ((x[i, j] - m) * r)
                db[j] += g[i, j]
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


# ---- float32 exp, tanh and erf, vectorizable (numba calls the scalar libm for these)

@numba.extending.intrinsic
def _bits_as_float32(typingctx, v):
    """The float32 whose bits are the low 32 bits of the integer ``v``."""
    if not isinstance(v, numba.types.Integer):
        return None

    def codegen(context, builder, sig, args):
        a = args[0]
        if v.bitwidth != 32:
            a = builder.trunc(a, llvmlite.ir.IntType(32))
        return builder.bitcast(a, llvmlite.ir.FloatType())

    return numba.types.float32(v), codegen


F = np.float32
# e^v = 2^k e^r with k = round(v / ln 2) and |r| <= ln 2 / 2; ln 2 in two parts (the
# first exact in a few bits), e^r by Cephes' expf polynomial: within 1 ulp of e^v
_LN2_HI, _LN2_LO, _LOG2E = F(0.693359375), F(-2.12194440e-4), F(1.44269504088896341)
_EXP_P = (F(1.9875691500e-4), F(1.3981999507e-3), F(8.3334519073e-3), F(4.1665795894e-2),
          F(1.6666665459e-1), F(5.0000001201e-1))
_EXP_LO = F(-87.33654)  # below: 0 (where float32's normal numbers end)


@scalar
def exp32(v):
    """e^v for float32 ``v`` up to 88 (the kernels pass at most 18): within 1 ulp; NaN
    stays NaN, and below -87.3 the result is 0."""
    w = max(v, _EXP_LO)
    k = np.floor(w * _LOG2E + F(0.5))
    r = w - k * _LN2_HI - k * _LN2_LO
    p0, p1, p2, p3, p4, p5 = _EXP_P
    p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
    # 2^k from its exponent bits, k in [-126, 127]: in int32, which vectorizes at the
    # floats' width (int64 would take two conversions per vector and a repack)
    e = (p * (r * r) + r + F(1.0)) * _bits_as_float32((np.int32(k) + np.int32(127)) << np.int32(23))
    if v < _EXP_LO:
        e = F(0.0)
    if v != v:
        e = v
    return e


@scalar
def tanh_from_exp32(y):
    """tanh(y) = 1 - 2 / (e^2|y| + 1), signed: for |y| above 0.6 or so, where the
    subtraction loses nothing (erf32 calls it there only)."""
    t = F(1.0) - F(2.0) / (exp32(abs(y) * F(2.0)) + F(1.0))
    return -t if y < 0 else t


@scalar
def horner(s, c, top, bottom):
    """c[bottom] + c[bottom + 1] s + ... + c[top] s^(top - bottom), by Horner's rule."""
    p = s * c[top]
    for j in range(top - 1, bottom, -1):
        p = (p + c[j]) * s
    return p + c[bottom]


@scalar
def erf32(x, c):
    """erf(scale x): below c20 in size by its Taylor series x T(x^2) (T's coefficients
    c12..c19, scaled), and above as tanh(z P(z^2)), z = x clipped to [c0, c1], P's
    coefficients c2..c11 (lowest first, scaled by cpu_kernels._erf_constants); odd, and
    NaN stays NaN."""
    z = x
    if z < c[0]:
        z = c[0]
    elif z > c[1]:
        z = c[1]
    s = z * z
    large = tanh_from_exp32(horner(s, c, 11, 2) * z)
    small = horner(x * x, c, 19, 12) * x
    return small if abs(x) < c[20] else large


@scalar
def erf_constants(k):
    """The array of erf32's constants as a tuple (loaded once, before a kernel's loop)."""
    return (k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7], k[8], k[9], k[10], k[11], k[12],
            k[13], k[14], k[15], k[16], k[17], k[18], k[19], k[20])


@fused
def erf_f32(x, k, out):
    c = erf_constants(k)
    for i in range(x.size):
        out[i] = erf32(x[i], c)


# Phi(x) for GELU: Phi(-|x|) = erfc(z) / 2, z = |x| / sqrt 2, = t Q(t) e^(-x^2 / 2) / 2
# with t = 1 / (1 + p z), p = 0.6, the form of Abramowitz and Stegun's 7.1.26, and Q a
# degree-5 polynomial fitted by tools/fit_phi.py (Lawson-weighted least squares on
# Chebyshev nodes, against mpmath's erfc) to erfc(z) e^(z^2) / t over
# 0.8 <= |x| <= 13.3, weighted by Phi's absolute error: 2.3e-10 at most (before its
# coefficients round to float32), where 7.1.26's polynomial is 7.5e-8 off and
# its relative error in the left tail reaches percents. Phi(|x|) = 1 - Phi(-|x|). One
# exp, the very one the normal density in GELU's gradient needs, and all in float32:
# Phi(x) within 7.6e-8 of float64 (its roundings), GELU within 1e-7 max(1, |x|) and its
# derivative within 1.4e-7 (PyTorch's: 1.1e-6 and 2.6e-7, its 1 + erf cancelling for
# negative x), the left tail within 0.1 % relative.
PHI_P = 0.6
PHI_Q = (0.3352374164361619, 0.37579192310876286, 0.10206287098387817, 0.585666075371962,
         -0.5383374768099275, 0.13963827643020446)   # lowest power first
_PHI_P = F(PHI_P / math.sqrt(2))
_PHI_Q = tuple(F(c / 2) for c in PHI_Q)
_INV_SQRT_2PI = F(0.3989422804014327)
# Near 0, where 1 - Phi(-|x|) would round Phi's small part away, Phi(x) = 1/2 + x T(x^2)
# by its Taylor series, sum_n (-1)^n x^(2n+1) / (sqrt(2 pi) 2^n n! (2n+1)): below
# |x| = 0.8 eight terms leave 1e-10
_PHI_T = tuple(F((-1) ** n / (math.sqrt(2 * math.pi) * 2 ** n * math.factorial(n) * (2 * n + 1)))
               for n in range(8))
_PHI_T_BELOW = F(0.8)


@scalar
def phi_and_density32(v):
    """Phi(v) and e^(-v^2 / 2) (NaN stays NaN; Phi(inf) = 1, Phi(-inf) = 0)."""
    s = v * v
    e = exp32(s * F(-0.5))
    t = F(1.0) / (F(1.0) + _PHI_P * abs(v))
    q = horner(t, _PHI_Q, 5, 0) * (t * e)
    near = horner(s, _PHI_T, 7, 0) * v + F(0.5)
    return (near if abs(v) < _PHI_T_BELOW else q if v <= 0 else F(1.0) - q), e


@fused
def gelu_f32(x, out):
    for i in range(x.size):
        out[i] = phi_and_density32(x[i])[0] * x[i]


@fused
def gelu_cdf_f32(x, out, cdf):
    # gelu_f32 keeping Phi(x) in cdf (a separate loop: out and cdf never alias, so that
    # LLVM vectorizes it without a fallback)
    for i in range(x.size):
        phi = phi_and_density32(x[i])[0]
        cdf[i] = phi
        out[i] = phi * x[i]


@fused
def gelu_grad_f32(x, g, out):
    # g gelu'(x) = g (Phi(x) + x phi(x)), phi(x) = e^(-x^2 / 2) / sqrt(2 pi)
    for i in range(x.size):
        v = x[i]
        phi, e = phi_and_density32(v)
        out[i] = (e * v * _INV_SQRT_2PI + phi) * g[i]


@fused
def gelu_grad_cdf_f32(x, g, cdf, out):
    for i in range(x.size):
        v = x[i]
        out[i] = (exp32(v * v * F(-0.5)) * v * _INV_SQRT_2PI + cdf[i]) * g[i]


# GELU's tanh form: 0.5 x (1 + tanh(u)), u = k (x + c x^3), = x sigmoid(2u) = x / (1 +
# e^(-2u)): one exp (the numpy body in pointwise does the same, in passes). e^(-2u)
# overflows to inf for x below about -10.05 (the argument is clipped at 89, where exp32
# gives inf), and sigmoid(2u) is then 0, as numpy's exp makes it
_GELU_TK = F(-2.0 * math.sqrt(2.0 / math.pi))
_GELU_TC = F(0.044715)
_GELU_TD = F(3 * 0.044715 * 2 * math.sqrt(2.0 / math.pi))
_GELU_T2K = F(2.0 * math.sqrt(2.0 / math.pi))


@scalar
def gelu_tanh_sigmoid32(v):
    """sigmoid(2u), u = k (v + c v^3), for GELU's tanh form, and 1 - sigmoid(2u) (as
    e^(-2u) sigmoid(2u): 1 minus it would cancel where it is near 1); NaN stays NaN."""
    w = (v * v * _GELU_TC + F(1.0)) * v * _GELU_TK
    if w > F(89.0):
        w = F(89.0)
    e = exp32(w)
    s = F(1.0) / (e + F(1.0))
    return s, (e * s if s > F(0.0) else F(1.0))


@fused
def gelu_tanh_f32(x, out):
    for i in range(x.size):
        out[i] = gelu_tanh_sigmoid32(x[i])[0] * x[i]


@fused
def gelu_tanh_grad_f32(x, g, out):
    # g gelu'(x) = g s (1 + x (1 - s) 2u'), s = sigmoid(2u), 2u' = 2k (1 + 3 c x^2)
    for i in range(x.size):
        v = x[i]
        s, s1 = gelu_tanh_sigmoid32(v)
        out[i] = (s1 * v * (v * v * _GELU_TD + _GELU_T2K) + F(1.0)) * s * g[i]


@fused
def softmax_f32(x, bias, scale, out, inplace):
    # softmax of x * scale + bias[row % L] over each row (x: whole (L, S) matrices), its
    # largest subtracted first. In place (x is out), the first pass reads out itself: with
    # x and out as two names of one array, LLVM's overlap check sends the loop to its
    # scalar version (2.5x slower over the whole softmax)
    n, c = x.shape
    L = bias.shape[0]
    for i in range(n):
        br = i % L
        if inplace:
            for j in range(c):
                out[i, j] = out[i, j] * scale + bias[br, j]
        else:
            for j in range(c):
                out[i, j] = x[i, j] * scale + bias[br, j]
        m = row_max(out[i])
        for j in range(c):
            out[i, j] = exp32(out[i, j] - m)
        s = row_sum(out[i])
        for j in range(c):
            out[i, j] = out[i, j] / s


@fused
def log_softmax_f32(x, out, tmp):
    # x - max - log(sum(exp(x - max))) over each row; tmp: one row of scratch
    n, c = x.shape
    for i in range(n):
        m = row_max(x[i])
        for j in range(c):
            out[i, j] = x[i, j] - m
        for j in range(c):
            tmp[j] = exp32(out[i, j])
        ls = np.log(row_sum(tmp))
        for j in range(c):
            out[i, j] = out[i, j] - ls


@fused
def log_softmax_grad_f32(y, g, out):
    # g - exp(y) sum(g) over each row (y: log_softmax's output)
    n, c = y.shape
    for i in range(n):
        s = row_sum(g[i])
        for j in range(c):
            out[i, j] = g[i, j] - exp32(y[i, j]) * s


@exact
def column_sums(a, out):
    # out[j] = a[0, j] + a[1, j] + ... in row order, as numpy's sum(axis=0) over a
    # C-contiguous array adds them (the first row copied, so -0.0 stays -0.0)
    n, c = a.shape
    for j in range(c):
        out[j] = a[0, j]
    for i in range(1, n):
        for j in range(c):
            out[j] += a[i, j]


# ---- scatter-adds

@exact
def index_add_rows(out, index, src):
    """out[index[i]] += src[i] for each row i of src in turn (out and src 2-D, index
    in range): numpy's add.at in its order, so the same sums, without its per-element
    dispatch (for an embedding's gradient of 2048 rows of 128: 1.7 -> 0.1 ms)."""
    d = src.shape[1]
    for i in range(index.size):
        r = index[i]
        for j in range(d):
            out[r, j] += src[i, j]


# ---- the optimizer

@exact
def adam_f32(x, g, m, v, k):
    """One Adam(W) step over flat float32 arrays, in place, with the operations and
    roundings of optim.adam's numpy body (no contraction into fused multiply-adds),
    so that both give the same bits. k = [decay, 1 - b1, b1, 1 - b2, b2,
    1 / sqrt(1 - b2^step), eps, lr / (1 - b1^step)]; decay is 1 - lr wd (AdamW), or 1,
    by which multiplying changes nothing."""
    decay, c1, b1, c2, b2, s2, eps, lr1 = k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]
    for i in range(x.size):
        gi = g[i]
        mi = m[i] * b1 + gi * c1
        vi = v[i] * b2 + (gi * gi) * c2
        m[i] = mi
        v[i] = vi
        x[i] = x[i] * decay - (mi / (np.sqrt(vi) * s2 + eps)) * lr1


@exact
def sgd_f32(x, d, b, k, momentum, first, nesterov, damped):
    """One SGD step over flat float32 arrays, in place, with optim.sgd's numpy body's
    operations and roundings: ``d`` the gradient (weight decay already added), ``b``
    the momentum buffer (filled with ``d`` on the ``first`` step), k = [lr, momentum,
    1 - dampening]."""
    lr, mom, undamp = k[0], k[1], k[2]
    for i in range(x.size):
        u = d[i]
        if momentum:
            if first:
                bi = u
            elif damped:
                bi = b[i] * mom + u * undamp
            else:
                bi = b[i] * mom + u
            b[i] = bi
            u = u + mom * bi if nesterov else bi
        x[i] = x[i] - lr * u


KERNELS = {"ln_fwd": ln_fwd, "ln_bwd": ln_bwd, "softmax_grad": softmax_grad,
           "softmax_f32": softmax_f32, "log_softmax_f32": log_softmax_f32,
           "log_softmax_grad_f32": log_softmax_grad_f32, "erf_f32": erf_f32, "gelu_f32": gelu_f32,
           "gelu_cdf_f32": gelu_cdf_f32, "gelu_grad_f32": gelu_grad_f32,
           "gelu_tanh_f32": gelu_tanh_f32, "gelu_tanh_grad_f32": gelu_tanh_grad_f32,
           "gelu_grad_cdf_f32": gelu_grad_cdf_f32, "adam_f32": adam_f32, "index_add_rows": index_add_rows,
           "column_sums": column_sums,
           "sgd_f32": sgd_f32}
