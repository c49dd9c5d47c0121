"""Fused GPU kernels for ops where one pass over memory instead of several pays:
GELU and its gradient and the SGD and Adam/AdamW updates (CuPy ElementwiseKernels), and
the row kernels of softmax with cross-entropy and of LayerNorm (a RawModule, one
thread block per row).

Each is used behind one predicate, ``use(array)`` (kernels enabled, a float32 or
float64 GPU array), and is tested against the unfused array code on the GPU.
Kernels are compiled on first use; ``enabled = False`` turns every one of them off.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import backend

enabled = True

_GELU_TANH = """
    const T k = 0.7978845608028654;
    const T c = 0.044715;
    T u = k * (x + c * x * x * x);
    T s = (T)0.5 * (1 + tanh(u));
"""
_GELU_ERF = """
    T cdf = 0.5 * (1 + erf(x * 0.7071067811865476));
"""


@functools.lru_cache(maxsize=None)
def _kernel(name: str):
    cp = backend.cupy()
    if name == "gelu_tanh":
        return cp.ElementwiseKernel("T x", "T y", _GELU_TANH + "y = x * s;", "distgrad_gelu_tanh")
    if name == "gelu_erf":
        return cp.ElementwiseKernel("T x", "T y", _GELU_ERF + "y = x * cdf;", "distgrad_gelu_erf")
    if name == "gelu_tanh_grad":
        return cp.ElementwiseKernel(
            "T x, T g", "T d",
            _GELU_TANH + "T du = k * (1 + 3 * c * x * x); d = g * (s * (1 + 2 * x * (1 - s) * du));",
            "distgrad_gelu_tanh_grad")
    if name == "gelu_erf_grad":
        return cp.ElementwiseKernel(
            "T x, T g", "T d",
            _GELU_ERF + "d = g * (cdf + x * exp(-0.5 * x * x) * 0.3989422804014327);",
            "distgrad_gelu_erf_grad")
    if name == "sgd":
        return cp.ElementwiseKernel("T d, T lr", "T p", "p -= lr * d", "distgrad_sgd")
    if name == "adam":
        return cp.ElementwiseKernel(
            "T g, T b1, T b2, T step_size, T inv_sqrt_bc2, T eps, T decay",
            "T p, T m, T v",
            """
            p = p * decay;
            m = b1 * m + (1 - b1) * g;
            v = b2 * v + (1 - b2) * g * g;
            p = p - step_size * m / (sqrt(v) * inv_sqrt_bc2 + eps);
            """,
            "distgrad_adam")
    raise KeyError(name)


def gelu(x, approximate: str):
    return _kernel("gelu_tanh" if approximate == "tanh" else "gelu_erf")(x)


def gelu_grad(x, g, approximate: str):
    return _kernel("gelu_tanh_grad" if approximate == "tanh" else "gelu_erf_grad")(x, g)


def sgd_update(p, d, lr) -> None:
    """In place: ``p -= lr * d``."""
    _kernel("sgd")(d, p.dtype.type(lr), p)


def adam_update(p, g, m, v, b1, b2, step_size, inv_sqrt_bc2, eps, decay) -> None:
    """In place: decoupled decay, both moments, and the parameter update."""
    f = p.dtype.type
    _kernel("adam")(g, f(b1), f(b2), f(step_size), f(inv_sqrt_bc2), f(eps), f(decay), p, m, v)


# ----------------------------------------------------------------- row kernels
# One block per row of a C-contiguous (rows, C) array. Sums and the softmax's
# running (max, sum of exp) pair are reduced within a warp by shuffles, then
# across warps through shared memory.
_ROWS_SRC = r"""
template<typename T> __device__ T neg_inf();
template<> __device__ float neg_inf<float>() { return __int_as_float(0xff800000); }
template<> __device__ double neg_inf<double>() { return __longlong_as_double(0xfff0000000000000ULL); }

template<typename T> __device__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    return v;
}

// The block's sum of v, returned to every thread. sh holds 32 values.
template<typename T> __device__ T block_sum(T v, T* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? sh[lane] : T(0);
        v = warp_sum(v);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// Merge the softmax pair (m2, s2) into (m, s): s is a sum of exp(x - m).
template<typename T> __device__ void merge(T& m, T& s, T m2, T s2) {
    const T mm = m > m2 ? m : m2;
    if (mm == neg_inf<T>()) { m = mm; s = T(0); return; }
    s = s * exp(m - mm) + s2 * exp(m2 - mm);
    m = mm;
}

// Per row: lse = log(sum(exp(x))), and loss = lse - x[target] (0 where the target is
// ignore_index or out of range; a range check of its own reports the latter).
template<typename T>
__global__ void cross_entropy_forward(const T* x, const long long* target, long long ignore_index,
                                      long long C, T* lse, T* loss) {
    __shared__ T sh_m[32];
    __shared__ T sh_s[32];
    const long long row = blockIdx.x;
    const T* xr = x + row * C;
    T m = neg_inf<T>(), s = T(0);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) {
        const T v = xr[j];
        if (v > m) { s = s * exp(m - v) + T(1); m = v; }
        else if (m != neg_inf<T>() || v != neg_inf<T>()) s += exp(v - m);
    }
    for (int o = 16; o > 0; o >>= 1) {
        const T m2 = __shfl_down_sync(0xffffffffu, m, o);
        const T s2 = __shfl_down_sync(0xffffffffu, s, o);
        merge(m, s, m2, s2);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    if (lane == 0) { sh_m[warp] = m; sh_s[warp] = s; }
    __syncthreads();
    if (warp == 0) {
        m = lane < warps ? sh_m[lane] : neg_inf<T>();
        s = lane < warps ? sh_s[lane] : T(0);
        for (int o = 16; o > 0; o >>= 1) {
            const T m2 = __shfl_down_sync(0xffffffffu, m, o);
            const T s2 = __shfl_down_sync(0xffffffffu, s, o);
            merge(m, s, m2, s2);
        }
        if (lane == 0) {
            const T l = m + log(s);
            lse[row] = l;
            const long long t = target[row];
            loss[row] = (t == ignore_index || t < 0 || t >= C) ? T(0) : l - xr[t];
        }
    }
}

// grad[r, j] = coef[r] * (softmax(x)[r, j] - (j == target[r]))
template<typename T>
__global__ void cross_entropy_backward(const T* x, const long long* target, const T* lse,
                                       const T* coef, long long C, T* grad) {
    const long long row = blockIdx.x;
    const T l = lse[row], c = coef[row];
    const long long t = target[row];
    const T* xr = x + row * C;
    T* gr = grad + row * C;
    for (long long j = threadIdx.x; j < C; j += blockDim.x)
        gr[j] = c * (exp(xr[j] - l) - (j == t ? T(1) : T(0)));
}

// y = (x - mean) * rstd * w + b per row; mean and rstd are kept for backward.
template<typename T>
__global__ void layer_norm_forward(const T* x, const T* w, const T* b, long long C, T eps,
                                   T* y, T* mean_out, T* rstd_out) {
    __shared__ T sh[32];
    const long long row = blockIdx.x;
    const T* xr = x + row * C;
    T* yr = y + row * C;
    T acc = T(0);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) acc += xr[j];
    const T mean = block_sum(acc, sh) / T(C);
    acc = T(0);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) { const T d = xr[j] - mean; acc += d * d; }
    const T rstd = T(1) / sqrt(block_sum(acc, sh) / T(C) + eps);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) {
        T v = (xr[j] - mean) * rstd;
        if (w) v *= w[j];
        if (b) v += b[j];
        yr[j] = v;
    }
    if (threadIdx.x == 0) { mean_out[row] = mean; rstd_out[row] = rstd; }
}

// gx = rstd * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)), gxhat = g * w; also
// g * xhat per element (gxh, may be null), whose column sums are the weight's gradient.
template<typename T>
__global__ void layer_norm_backward(const T* x, const T* g, const T* w, const T* mean_in,
                                    const T* rstd_in, long long C, T* gx, T* gxh) {
    __shared__ T sh[32];
    const long long row = blockIdx.x;
    const T mean = mean_in[row], rstd = rstd_in[row];
    const T* xr = x + row * C;
    const T* gr = g + row * C;
    T a = T(0), bsum = T(0);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) {
        const T xhat = (xr[j] - mean) * rstd;
        const T gh = w ? gr[j] * w[j] : gr[j];
        a += gh;
        bsum += gh * xhat;
        if (gxh) gxh[row * C + j] = gr[j] * xhat;
    }
    const T ma = block_sum(a, sh) / T(C);
    const T mb = block_sum(bsum, sh) / T(C);
    if (!gx) return;
    T* out = gx + row * C;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) {
        const T xhat = (xr[j] - mean) * rstd;
        const T gh = w ? gr[j] * w[j] : gr[j];
        out[j] = rstd * (gh - ma - xhat * mb);
    }
}

template<typename T> __device__ T block_max(T v, T* sh) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int warps = (blockDim.x + 31) >> 5;
    for (int o = 16; o > 0; o >>= 1) { const T u = __shfl_down_sync(0xffffffffu, v, o); v = u > v ? u : v; }
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < warps ? sh[lane] : neg_inf<T>();
        for (int o = 16; o > 0; o >>= 1) { const T u = __shfl_down_sync(0xffffffffu, v, o); v = u > v ? u : v; }
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

// y = softmax(x * scale) over each row; with causal, row r of each (L, C) matrix
// takes columns 0..r%L only (the others are 0), as softmax after a causal -inf mask.
template<typename T>
__global__ void softmax_forward(const T* x, long long C, long long L, T scale, int causal, T* y) {
    __shared__ T sh[32];
    const long long row = blockIdx.x;
    const long long limit = causal ? (row % L) + 1 < C ? (row % L) + 1 : C : C;
    const T* xr = x + row * C;
    T* yr = y + row * C;
    T m = neg_inf<T>();
    for (long long j = threadIdx.x; j < limit; j += blockDim.x) { const T v = xr[j] * scale; m = v > m ? v : m; }
    m = block_max(m, sh);
    T s = T(0);
    for (long long j = threadIdx.x; j < limit; j += blockDim.x) s += exp(xr[j] * scale - m);
    const T inv = T(1) / block_sum(s, sh);
    for (long long j = threadIdx.x; j < C; j += blockDim.x)
        yr[j] = j < limit ? exp(xr[j] * scale - m) * inv : T(0);
}

// gx = scale * y * (g - sum(g * y)) over each row.
template<typename T>
__global__ void softmax_backward(const T* y, const T* g, long long C, T scale, T* gx) {
    __shared__ T sh[32];
    const long long row = blockIdx.x;
    const T* yr = y + row * C;
    const T* gr = g + row * C;
    T acc = T(0);
    for (long long j = threadIdx.x; j < C; j += blockDim.x) acc += gr[j] * yr[j];
    const T dot = block_sum(acc, sh);
    T* out = gx + row * C;
    for (long long j = threadIdx.x; j < C; j += blockDim.x) out[j] = scale * yr[j] * (gr[j] - dot);
}

// y[r, j] += b[j] for a C-contiguous (M, N) y: rows on the grid's y axis (no index
// division per element, which CuPy's broadcasting add pays).
template<typename T>
__global__ void add_bias(T* y, const T* b, long long M, long long N) {
    const long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    const T bj = b[j];
    for (long long row = blockIdx.y; row < M; row += gridDim.y) y[row * N + j] += bj;
}
"""
_ROW_KERNELS = ("cross_entropy_forward", "cross_entropy_backward", "layer_norm_forward",
                "layer_norm_backward", "softmax_forward", "softmax_backward", "add_bias")


@functools.lru_cache(maxsize=None)
def _rows_module():
    cp = backend.cupy()
    names = [f"{k}<{t}>" for k in _ROW_KERNELS for t in ("float", "double")]
    return cp.RawModule(code=_ROWS_SRC, options=("-std=c++17",), name_expressions=names)


def _row_kernel(name, dtype):
    return _rows_module().get_function(f"{name}<{'float' if dtype == np.float32 else 'double'}>")


def use(arr) -> bool:
    """The one test every fused kernel's call site makes: kernels are on (``enabled``),
    and ``arr`` is a float32 or float64 array on the GPU. Anything else takes the
    unfused array code (which also runs on the GPU)."""
    return enabled and backend.is_device_array(arr) and arr.dtype in (np.float32, np.float64)


rows_supported = use   # the row kernels' name for the same test


def _threads(c: int) -> int:
    """Threads per row: about four elements each, 32 to 512."""
    n = 32
    while n < 512 and n * 4 < c:
        n *= 2
    return n


def _ptr(a):
    return 0 if a is None else a


def cross_entropy_forward(x, target, ignore_index: int):
    """Row-wise log-sum-exp and loss (``lse - x[target]``, 0 where ignored) of a (N, C)
    array of logits and int64 targets."""
    cp = backend.cupy()
    n, c = x.shape
    lse = cp.empty(n, x.dtype)
    loss = cp.empty(n, x.dtype)
    if n:
        _row_kernel("cross_entropy_forward", x.dtype)(
            (n,), (_threads(c),), (x, target, np.int64(ignore_index), np.int64(c), lse, loss))
    return lse, loss


def cross_entropy_backward(x, target, lse, coef):
    """``coef[:, None] * (softmax(x) - one_hot(target))``, one pass over the logits."""
    cp = backend.cupy()
    n, c = x.shape
    grad = cp.empty_like(x)
    if n:
        _row_kernel("cross_entropy_backward", x.dtype)(
            (n,), (_threads(c),), (x, target, lse, coef, np.int64(c), grad))
    return grad


def layer_norm_forward(x, w, b, eps: float):
    """LayerNorm of the rows of a C-contiguous (N, C) array; returns y, mean, rstd."""
    cp = backend.cupy()
    n, c = x.shape
    y = cp.empty_like(x)
    mean = cp.empty(n, x.dtype)
    rstd = cp.empty(n, x.dtype)
    if n:
        _row_kernel("layer_norm_forward", x.dtype)(
            (n,), (_threads(c),), (x, _ptr(w), _ptr(b), np.int64(c), x.dtype.type(eps), y, mean, rstd))
    return y, mean, rstd


def layer_norm_backward(x, g, w, mean, rstd, need_x: bool, need_gxh: bool):
    """The input's gradient (if ``need_x``) and ``g * xhat`` (if ``need_gxh``, for the
    weight's gradient) of LayerNorm over the rows of (N, C) arrays."""
    cp = backend.cupy()
    n, c = x.shape
    gx = cp.empty_like(x) if need_x else None
    gxh = cp.empty_like(x) if need_gxh else None
    if n and (need_x or need_gxh):
        _row_kernel("layer_norm_backward", x.dtype)(
            (n,), (_threads(c),), (x, g, _ptr(w), mean, rstd, np.int64(c), _ptr(gx), _ptr(gxh)))
    return gx, gxh


def softmax_forward(x, scale: float = 1.0, causal: bool = False):
    """Softmax over the last axis of a C-contiguous array, of ``x * scale``; with
    ``causal``, each (L, C) matrix's row r takes columns 0..r only."""
    cp = backend.cupy()
    y = cp.empty_like(x)
    c = x.shape[-1]
    rows = x.size // c if c else 0
    if rows:
        L = x.shape[-2] if x.ndim >= 2 else 1
        _row_kernel("softmax_forward", x.dtype)(
            (rows,), (_threads(c),), (x, np.int64(c), np.int64(L), x.dtype.type(scale), np.int32(causal), y))
    return y


def softmax_backward(y, g, scale: float = 1.0):
    """``scale * y * (g - sum(g * y))`` over the last axis (C-contiguous arrays)."""
    cp = backend.cupy()
    gx = cp.empty_like(y)
    c = y.shape[-1]
    rows = y.size // c if c else 0
    if rows:
        _row_kernel("softmax_backward", y.dtype)(
            (rows,), (_threads(c),), (y, g, np.int64(c), y.dtype.type(scale), gx))
    return gx


# ------------------------------------------------------- batched matrix products
def bmm(a, b, transa: bool = False, transb: bool = False):
    """``op(a) @ op(b)`` for C-contiguous 3-D float arrays (batch, rows, cols), where
    ``op`` transposes the last two dims when asked: one cuBLAS strided-batched call
    that reads the transposed operands in place (CuPy's matmul copies them first)."""
    from cupy.cuda import device
    from cupy_backends.cuda.api import runtime
    from cupy_backends.cuda.libs import cublas

    cp = backend.cupy()
    nb, ra, ca = a.shape
    _, rb, cb = b.shape
    m, k = (ca, ra) if transa else (ra, ca)
    n = rb if transb else cb
    c = cp.empty((nb, m, n), a.dtype)
    if c.size == 0:
        return c
    if k == 0:
        c.fill(0)
        return c
    double = a.dtype == np.float64
    one = np.array(1, a.dtype)
    zero = np.array(0, a.dtype)
    # Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, and a row-major
    # matrix read column-major is its transpose: so B comes first, each transposed
    # exactly when it was asked to be.
    cublas.gemmStridedBatchedEx(
        device.get_cublas_handle(), int(transb), int(transa), n, m, k, one.ctypes.data,
        b.data.ptr, runtime.CUDA_R_64F if double else runtime.CUDA_R_32F, cb, rb * cb,
        a.data.ptr, runtime.CUDA_R_64F if double else runtime.CUDA_R_32F, ca, ra * ca,
        zero.ctypes.data, c.data.ptr, runtime.CUDA_R_64F if double else runtime.CUDA_R_32F, n, m * n,
        nb, cublas.CUBLAS_COMPUTE_64F if double else cublas.CUBLAS_COMPUTE_32F, cublas.CUBLAS_GEMM_DEFAULT)
    return c


def add_bias_(y, b) -> None:
    """In place: ``y += b`` for a C-contiguous (M, N) ``y`` and a contiguous (N,) ``b``."""
    m, n = y.shape
    if m and n:
        _row_kernel("add_bias", y.dtype)(
            ((n + 255) // 256, min(m, 65535)), (256,), (y, b, np.int64(m), np.int64(n)))
