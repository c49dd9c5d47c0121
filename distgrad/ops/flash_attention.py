"""Flash attention on the GPU (the FlashAttention-2 algorithm): softmax(q k^T * scale) v
computed tile by tile with an online softmax, keeping only the output and each query
row's logsumexp, so no (L, S) matrix is ever materialized, forward or backward.

Layout: (B, H, L, D) queries and (B, H, S, D) keys and values of one dtype (float32,
float16 or bfloat16), D <= 128, read in place through their strides (only the last dim
must be contiguous), so the q, k and v that a GPT block splits from one (B, T, 3C)
projection and views as (B, H, T, D) are never copied. The output and the gradients
are written laid out (B, L, H, D), as PyTorch's flash attention writes them, so the
transposes back to (B, T, C) are views too. Each row's logsumexp is (B * H, L). Every
sum runs in float32. Causal masking is top-left aligned, as PyTorch's ``is_causal``:
query i sees keys j <= i.

Kernels (templates on the input type; a RawModule per type):
- ``flash_forward``: a block of 128 threads per tile of 32 queries, 4 threads per query
  row (each holds 8 of a key tile's 32 scores and 32 of the row's 128 output
  columns); per key tile of 32: scores from shared-memory tiles of Q and K, the row's
  running max and sum merged across its 4 lanes by shuffles, the output rescaled,
  then P (through shared memory) times the V tile, which reuses K's buffer.
- ``flash_backward_delta``: D_i = rowsum(dO_i * O_i), a warp per row.
- ``flash_backward_dkdv``: a block per tile of 32 keys, looping over the query tiles
  that see them; P = exp(S - lse) and dS = P * (dO V^T - D) recomputed per tile;
  dV += P^T dO and dK += dS^T Q accumulate in registers.
- ``flash_backward_dq``: a block per tile of 32 queries, looping over key tiles;
  recomputes P and dS and accumulates dQ += dS K. Two passes recompute the scores
  twice instead of adding dQ with atomics: deterministic and without a float32 dQ
  buffer.
Shared memory holds float32 tiles with rows padded to D + 1 (the strided reads of a
warp fall in distinct banks): at D = 128, 37 KiB forward, 73 KiB for dK/dV and 69 KiB
for dQ (a kernel asks for more than the default 48 KiB once, when it is loaded).
The limit D <= 128 comes from both budgets: each thread keeps D / 4 float accumulators
per output (32, and 32 + 32 in the dK/dV kernel: 128 registers, no spills at sm_80 and
sm_90; the launch bounds of the backward kernels ask for 4 (dK/dV) and 5 (dQ) blocks
per SM, without which the strided addressing would take 168 and 124 registers and
cost a block of occupancy each), and the backward's four (32, D + 1) tiles stay
within the 96 KiB per block that every GPU since Volta allows.

``reference_forward`` and ``reference_backward`` run the same tiled algorithm (same
tiles, same recurrences, same backward split) in numpy, so the algorithm is tested
on the CPU; ``flash_forward`` and ``flash_backward`` given numpy arrays run them on
rows read and written with the kernels' index arithmetic, so the strided layouts are
tested there too.
"""
from __future__ import annotations

import functools

import numpy as np

from .. import backend
from ..backend import array_module
from ..backends import cuda as _cuda_backend
from ..dtype import BFLOAT16_NP
from . import cuda_kernels

BLOCK_M = 32        # queries per tile
BLOCK_N = 32        # keys per tile
ROW_THREADS = 4     # threads sharing one row of a tile
MAX_HEAD_DIM = 128
DTYPES = (np.dtype(np.float32), np.dtype(np.float16), BFLOAT16_NP)
_CTYPES = {np.dtype(np.float32): "float", np.dtype(np.float16): "__half", BFLOAT16_NP: "__nv_bfloat16"}

# Loads to and stores from float per input type; a module per type, so float32 needs
# no header (float16 and bfloat16 take CuPy's cuda_fp16.h / cuda_bf16.h).
_CONVERT = {
    "float": r"""
__device__ __forceinline__ float to_f(float x) { return x; }
template<typename T> __device__ __forceinline__ T from_f(float x);
template<> __device__ __forceinline__ float from_f<float>(float x) { return x; }
""",
    "__half": r"""
#include <cuda_fp16.h>
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template<typename T> __device__ __forceinline__ T from_f(float x);
template<> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
""",
    "__nv_bfloat16": r"""
#include <cuda_bf16.h>
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template<typename T> __device__ __forceinline__ T from_f(float x);
template<> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}
""",
}
_SRC = r"""
#define BM 32
#define BN 32
#define TPR 4
#define THREADS (BM * TPR)
#define DMAX 128
#define DPT (DMAX / TPR)
#define CPT (BN / TPR)

__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000); }

// The max and sum over the TPR consecutive lanes that share a row.
__device__ __forceinline__ float row_max(float v) {
    for (int o = 1; o < TPR; o <<= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
__device__ __forceinline__ float row_sum(float v) {
    for (int o = 1; o < TPR; o <<= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Where the rows of a (B, H, len, D) tensor lie, in elements: row g of head
// n = b * H + h starts at b * s.b + h * s.h + g * s.l, and its D values are contiguous.
struct Strides { long long b, h, l; };

// The offset of head n's first row.
__device__ __forceinline__ long long head(long long n, long long H, Strides s) {
    return (n / H) * s.b + (n % H) * s.h;
}

// Rows row0 .. row0 + rows of a (len, D) matrix whose rows are stride elements apart into a
// float tile with rows D + 1 apart; rows past len are zeros.
template<typename T>
__device__ void load_tile(float* dst, const T* src, long long stride, long long row0, long long len,
                          int D, int rows) {
    const int ld = D + 1;
    for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
        const int r = i / D, d = i - r * D;
        const long long g = row0 + r;
        dst[r * ld + d] = g < len ? to_f(src[g * stride + d]) : 0.f;
    }
}

// Whether query i may attend to key j (top-left causal: j <= i).
__device__ __forceinline__ bool live(long long i, long long j, long long L, long long S, int causal) {
    return i < L && j < S && (!causal || j <= i);
}

// out = softmax(q k^T * scale) v, lse = the rows' logsumexp of q k^T * scale.
// Grid (N, ceil(L / BM)), THREADS threads, shared memory for two (BM, D + 1) tiles
// and one (BM, BN + 1) tile. The last query tiles (the longest causal rows) go first.
template<typename T>
__global__ void __launch_bounds__(THREADS)
flash_forward(const T* q, const T* k, const T* v, T* out, float* lse,
              long long L, long long S, int D, float scale, int causal, long long H,
              Strides sq, Strides sk, Strides sv, Strides so) {
    extern __shared__ float smem[];
    const int ld = D + 1;
    float* sQ = smem;
    float* sKV = sQ + BM * ld;
    float* sP = sKV + BN * ld;
    const long long n = blockIdx.x;
    const long long m0 = (long long)(gridDim.y - 1 - blockIdx.y) * BM;
    const int r = threadIdx.x / TPR, t = threadIdx.x % TPR;
    const long long i = m0 + r;
    q += head(n, H, sq); k += head(n, H, sk); v += head(n, H, sv);

    load_tile(sQ, q, sq.l, m0, L, D, BM);
    float m_i = neg_inf(), l_i = 0.f;
    float acc[DPT];
#pragma unroll
    for (int j = 0; j < DPT; ++j) acc[j] = 0.f;

    const long long n_end = causal ? (m0 + BM < S ? m0 + BM : S) : S;
    for (long long n0 = 0; n0 < n_end; n0 += BN) {
        __syncthreads();
        load_tile(sKV, k, sk.l, n0, S, D, BN);
        __syncthreads();
        float s[CPT];
#pragma unroll
        for (int jj = 0; jj < CPT; ++jj) s[jj] = 0.f;
        for (int d = 0; d < D; ++d) {
            const float qd = sQ[r * ld + d];
#pragma unroll
            for (int jj = 0; jj < CPT; ++jj) s[jj] += qd * sKV[(t + TPR * jj) * ld + d];
        }
        float mt = neg_inf();
#pragma unroll
        for (int jj = 0; jj < CPT; ++jj) {
            s[jj] = live(i, n0 + t + TPR * jj, L, S, causal) ? s[jj] * scale : neg_inf();
            mt = fmaxf(mt, s[jj]);
        }
        const float m_new = fmaxf(m_i, row_max(mt));
        const float alpha = m_new == neg_inf() ? 1.f : expf(m_i - m_new);
        float lt = 0.f;
#pragma unroll
        for (int jj = 0; jj < CPT; ++jj) {
            const float p = s[jj] == neg_inf() ? 0.f : expf(s[jj] - m_new);
            sP[r * (BN + 1) + t + TPR * jj] = p;
            lt += p;
        }
        l_i = l_i * alpha + row_sum(lt);
        m_i = m_new;
#pragma unroll
        for (int j = 0; j < DPT; ++j) acc[j] *= alpha;
        __syncthreads();
        load_tile(sKV, v, sv.l, n0, S, D, BN);
        __syncthreads();
        for (int c = 0; c < BN; ++c) {
            const float p = sP[r * (BN + 1) + c];
#pragma unroll
            for (int j = 0; j < DPT; ++j) {
                const int d = t + TPR * j;
                if (d < D) acc[j] += p * sKV[c * ld + d];
            }
        }
    }
    if (i >= L) return;
    const float inv = l_i > 0.f ? 1.f / l_i : 0.f;
    T* o = out + head(n, H, so) + i * so.l;
#pragma unroll
    for (int j = 0; j < DPT; ++j) {
        const int d = t + TPR * j;
        if (d < D) o[d] = from_f<T>(acc[j] * inv);
    }
    if (t == 0) lse[n * L + i] = l_i > 0.f ? m_i + logf(l_i) : neg_inf();
}

// delta[n, i] = sum over d of dout[n, i, d] * out[n, i, d]; a warp per row n * L + i.
template<typename T>
__global__ void flash_backward_delta(const T* out, const T* dout, float* delta, long long rows,
                                     long long L, int D, long long H, Strides so, Strides sg) {
    const long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (row >= rows) return;
    const long long n = row / L, i = row - n * L;
    out += head(n, H, so) + i * so.l;
    dout += head(n, H, sg) + i * sg.l;
    float acc = 0.f;
    for (int d = lane; d < D; d += 32) acc += to_f(out[d]) * to_f(dout[d]);
    for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
    if (lane == 0) delta[row] = acc;
}

// dk and dv of a tile of BN keys (grid (N, ceil(S / BN))), over the query tiles that
// see them: P = exp(q k^T * scale - lse), dS = P * (dout v^T - delta),
// dv = sum P^T dout, dk = scale * sum dS^T q. Shared memory: four (32, D + 1) tiles,
// two (BN, BM + 1) tiles and 2 * BM floats.
template<typename T>
__global__ void __launch_bounds__(THREADS, 4)
flash_backward_dkdv(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                    const float* delta, T* dk, T* dv, long long L, long long S, int D,
                    float scale, int causal, long long H, Strides sq, Strides sk, Strides sv,
                    Strides sg, Strides sdk, Strides sdv) {
    extern __shared__ float smem[];
    const int ld = D + 1;
    float* sK = smem;
    float* sV = sK + BN * ld;
    float* sQ = sV + BN * ld;
    float* sG = sQ + BM * ld;
    float* sP = sG + BM * ld;
    float* sS = sP + BN * (BM + 1);
    float* sL = sS + BN * (BM + 1);
    float* sD = sL + BM;
    const long long n = blockIdx.x;
    const long long n0 = (long long)blockIdx.y * BN;
    const int c = threadIdx.x / TPR, t = threadIdx.x % TPR;
    const long long j = n0 + c;
    q += head(n, H, sq); k += head(n, H, sk); v += head(n, H, sv); dout += head(n, H, sg);
    lse += n * L; delta += n * L;

    load_tile(sK, k, sk.l, n0, S, D, BN);
    load_tile(sV, v, sv.l, n0, S, D, BN);
    float gk[DPT], gv[DPT];
#pragma unroll
    for (int e = 0; e < DPT; ++e) { gk[e] = 0.f; gv[e] = 0.f; }

    const long long m_begin = causal ? (n0 / BM) * BM : 0;
    for (long long m0 = m_begin; m0 < L; m0 += BM) {
        __syncthreads();
        load_tile(sQ, q, sq.l, m0, L, D, BM);
        load_tile(sG, dout, sg.l, m0, L, D, BM);
        for (int x = threadIdx.x; x < BM; x += blockDim.x) {
            const bool in = m0 + x < L;
            sL[x] = in ? lse[m0 + x] : 0.f;
            sD[x] = in ? delta[m0 + x] : 0.f;
        }
        __syncthreads();
        float s[CPT], dp[CPT];
#pragma unroll
        for (int ii = 0; ii < CPT; ++ii) { s[ii] = 0.f; dp[ii] = 0.f; }
        for (int d = 0; d < D; ++d) {
            const float kd = sK[c * ld + d], vd = sV[c * ld + d];
#pragma unroll
            for (int ii = 0; ii < CPT; ++ii) {
                const int r = t + TPR * ii;
                s[ii] += sQ[r * ld + d] * kd;
                dp[ii] += sG[r * ld + d] * vd;
            }
        }
#pragma unroll
        for (int ii = 0; ii < CPT; ++ii) {
            const int r = t + TPR * ii;
            const float p = live(m0 + r, j, L, S, causal) ? expf(s[ii] * scale - sL[r]) : 0.f;
            sP[c * (BM + 1) + r] = p;
            sS[c * (BM + 1) + r] = p * (dp[ii] - sD[r]);
        }
        __syncthreads();
        for (int r = 0; r < BM; ++r) {
            const float p = sP[c * (BM + 1) + r], ds = sS[c * (BM + 1) + r];
#pragma unroll
            for (int e = 0; e < DPT; ++e) {
                const int d = t + TPR * e;
                if (d < D) {
                    gv[e] += p * sG[r * ld + d];
                    gk[e] += ds * sQ[r * ld + d];
                }
            }
        }
    }
    if (j >= S) return;
    dk += head(n, H, sdk) + j * sdk.l;
    dv += head(n, H, sdv) + j * sdv.l;
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
        const int d = t + TPR * e;
        if (d < D) {
            dk[d] = from_f<T>(gk[e] * scale);
            dv[d] = from_f<T>(gv[e]);
        }
    }
}

// dq of a tile of BM queries (grid (N, ceil(L / BM))), over the key tiles it sees:
// dq = scale * sum dS k. Shared memory: four (32, D + 1) tiles and one (BM, BN + 1).
template<typename T>
__global__ void __launch_bounds__(THREADS, 5)
flash_backward_dq(const T* q, const T* k, const T* v, const T* dout, const float* lse,
                  const float* delta, T* dq, long long L, long long S, int D, float scale,
                  int causal, long long H, Strides sq, Strides sk, Strides sv, Strides sg,
                  Strides sdq) {
    extern __shared__ float smem[];
    const int ld = D + 1;
    float* sQ = smem;
    float* sG = sQ + BM * ld;
    float* sK = sG + BM * ld;
    float* sV = sK + BN * ld;
    float* sS = sV + BN * ld;
    const long long n = blockIdx.x;
    const long long m0 = (long long)(gridDim.y - 1 - blockIdx.y) * BM;
    const int r = threadIdx.x / TPR, t = threadIdx.x % TPR;
    const long long i = m0 + r;
    q += head(n, H, sq); k += head(n, H, sk); v += head(n, H, sv); dout += head(n, H, sg);
    const float lse_i = i < L ? lse[n * L + i] : 0.f;
    const float delta_i = i < L ? delta[n * L + i] : 0.f;

    load_tile(sQ, q, sq.l, m0, L, D, BM);
    load_tile(sG, dout, sg.l, m0, L, D, BM);
    float gq[DPT];
#pragma unroll
    for (int e = 0; e < DPT; ++e) gq[e] = 0.f;

    const long long n_end = causal ? (m0 + BM < S ? m0 + BM : S) : S;
    for (long long n0 = 0; n0 < n_end; n0 += BN) {
        __syncthreads();
        load_tile(sK, k, sk.l, n0, S, D, BN);
        load_tile(sV, v, sv.l, n0, S, D, BN);
        __syncthreads();
        float s[CPT], dp[CPT];
#pragma unroll
        for (int jj = 0; jj < CPT; ++jj) { s[jj] = 0.f; dp[jj] = 0.f; }
        for (int d = 0; d < D; ++d) {
            const float qd = sQ[r * ld + d], gd = sG[r * ld + d];
#pragma unroll
            for (int jj = 0; jj < CPT; ++jj) {
                const int c = t + TPR * jj;
                s[jj] += qd * sK[c * ld + d];
                dp[jj] += gd * sV[c * ld + d];
            }
        }
#pragma unroll
        for (int jj = 0; jj < CPT; ++jj) {
            const int c = t + TPR * jj;
            const float p = live(i, n0 + c, L, S, causal) ? expf(s[jj] * scale - lse_i) : 0.f;
            sS[r * (BN + 1) + c] = p * (dp[jj] - delta_i);
        }
        __syncthreads();
        for (int c = 0; c < BN; ++c) {
            const float ds = sS[r * (BN + 1) + c];
#pragma unroll
            for (int e = 0; e < DPT; ++e) {
                const int d = t + TPR * e;
                if (d < D) gq[e] += ds * sK[c * ld + d];
            }
        }
    }
    if (i >= L) return;
    dq += head(n, H, sdq) + i * sdq.l;
#pragma unroll
    for (int e = 0; e < DPT; ++e) {
        const int d = t + TPR * e;
        if (d < D) dq[d] = from_f<T>(gq[e] * scale);
    }
}
"""
_KERNELS = ("flash_forward", "flash_backward_delta", "flash_backward_dkdv", "flash_backward_dq")
_THREADS = BLOCK_M * ROW_THREADS


def _smem_bytes(name: str, d: int) -> int:
    """The dynamic shared memory of kernel ``name`` at head dim ``d`` (as the CUDA
    source lays it out)."""
    tile = (d + 1) * 4
    if name == "flash_forward":
        return (BLOCK_M + BLOCK_N) * tile + BLOCK_M * (BLOCK_N + 1) * 4
    if name == "flash_backward_dkdv":
        return 2 * (BLOCK_M + BLOCK_N) * tile + 2 * BLOCK_N * (BLOCK_M + 1) * 4 + 2 * BLOCK_M * 4
    if name == "flash_backward_dq":
        return 2 * (BLOCK_M + BLOCK_N) * tile + BLOCK_M * (BLOCK_N + 1) * 4
    return 0


def source(ctype: str) -> str:
    """The CUDA source of the kernels for inputs of C type ``ctype``."""
    return _CONVERT[ctype] + _SRC


@functools.cache
def _module(ctype: str):
    cp = backend.cupy()
    return cp.RawModule(code=source(ctype), options=("-std=c++17",),
                        name_expressions=[f"{k}<{ctype}>" for k in _KERNELS])


def _kernel(name: str, dtype):
    return _device_kernel(name, _CTYPES[np.dtype(dtype)], backend.cupy().cuda.Device().id)


@functools.cache
def _device_kernel(name: str, ctype: str, device: int):
    """Kernel ``name`` loaded on ``device`` (the shared-memory limit is set per device)."""
    fn = _module(ctype).get_function(f"{name}<{ctype}>")
    need = _smem_bytes(name, MAX_HEAD_DIM)
    if need > 48 * 1024:  # beyond the default a kernel must ask for its dynamic shared memory
        fn.max_dynamic_shared_size_bytes = need   # (for the current device)
    return fn


def applies(q, k, v) -> bool:
    """Whether the flash kernels take ``softmax(q k^T) v`` of these arrays (no mask, no
    dropout: the caller checks those): fused kernels on (``cuda_kernels.enabled``) and
    flash on (``backends.cuda.enable_flash_sdp``), GPU arrays of one supported dtype,
    equal batch dims, one head dim of 1..128 for q, k and v."""
    return (cuda_kernels.enabled and _cuda_backend.flash_sdp_enabled() and backend.is_device_array(q)
            and q.dtype in DTYPES and q.dtype == k.dtype == v.dtype and q.ndim >= 3
            and q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and k.shape[-2] == v.shape[-2]
            and 1 <= q.shape[-1] <= MAX_HEAD_DIM and q.shape[-1] == k.shape[-1] == v.shape[-1]
            and -(-q.shape[-2] // BLOCK_M) <= 65535 and -(-k.shape[-2] // BLOCK_N) <= 65535)


_STRIDES = np.dtype([("b", np.int64), ("h", np.int64), ("l", np.int64)])   # the kernels' Strides


def as_heads(a):
    """``a`` (..., L, D) as the (B, H, L, D) array the kernels take. Any layout whose last
    dim is contiguous is read in place through its strides (q, k and v split from one
    (B, T, 3C) projection and viewed as (B, H, T, D), say); a 3-D array is one head per
    batch entry. A copy only where the last dim is strided or where more than two lead
    dims do not merge into (B, H)."""
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim > 4:
        a = a.reshape((-1,) + a.shape[-3:])
    if a.strides[-1] != a.itemsize or any(s < 0 or s % a.itemsize for s in a.strides):
        a = array_module(a).ascontiguousarray(a)
    return a


def _empty_heads(xp, shape, dtype):
    """An uninitialized (B, H, L, D) array laid out as (B, L, H, D), as PyTorch's flash
    attention lays out its output: its transpose(1, 2) is contiguous, so the heads side
    by side, (B, L, H * D), are a view."""
    B, H, L, D = shape
    return xp.empty((B, L, H, D), dtype).transpose(0, 2, 1, 3)


def _strides(a):
    """The strides of a (B, H, L, D) array in elements, as the kernels' ``Strides``: a
    one-element numpy array, which CuPy passes to a kernel by value."""
    b, h, l, _ = (s // a.itemsize for s in a.strides)
    return np.array([(b, h, l)], _STRIDES)


def _args(L, S, D, scale, causal, H):
    return np.int64(L), np.int64(S), np.int32(D), np.float32(scale), np.int32(causal), np.int64(H)


def flash_forward(q, k, v, scale: float, causal: bool):
    """``(out, lse)`` of attention over (B, H, L, D) ``q`` and (B, H, S, D) ``k``, ``v``
    (``as_heads`` arrays, read through their strides): ``out`` in q's dtype, a (B, H, L,
    D) view of a (B, L, H, D) array; ``lse`` (B * H, L), float32 on the GPU (the
    logsumexp of each row of ``q k^T * scale``, masked). On numpy arrays the reference
    runs in the kernels' place, through their index arithmetic."""
    xp = array_module(q)
    B, H, L, D = q.shape
    S = k.shape[2]
    out = _empty_heads(xp, q.shape, q.dtype)
    lse = xp.empty((B * H, L), _acc_type(q.dtype))
    if not (B * H and L):
        return out, lse
    if xp is np:
        o, lse[...] = reference_forward(_read(q), _read(k), _read(v), scale, causal)
        _write(out, o)
        return out, lse
    _kernel("flash_forward", q.dtype)(
        (B * H, -(-L // BLOCK_M)), (_THREADS,),
        (q, k, v, out, lse) + _args(L, S, D, scale, causal, H)
        + tuple(map(_strides, (q, k, v, out))),
        shared_mem=_smem_bytes("flash_forward", D))
    return out, lse


def flash_backward(q, k, v, out, lse, dout, scale: float, causal: bool):
    """``(dq, dk, dv)`` of ``flash_forward`` for the output's gradient ``dout`` (an
    ``as_heads`` array of q's dtype and shape), recomputing the probabilities from q, k
    and ``lse``; each gradient laid out as ``out`` is, (B, L, H, D) seen as (B, H, L, D)."""
    xp = array_module(q)
    B, H, L, D = q.shape
    S = k.shape[2]
    dq, dk, dv = (_empty_heads(xp, a.shape, a.dtype) for a in (q, k, v))
    if not (B * H and L and S):
        for a in (dq, dk, dv):
            a.fill(0)
        return dq, dk, dv
    if xp is np:
        grads = reference_backward(*map(_read, (q, k, v, out)), lse, _read(dout), scale, causal)
        for a, g in zip((dq, dk, dv), grads):
            _write(a, g)
        return dq, dk, dv
    n = B * H
    delta = xp.empty((n, L), np.float32)
    sq, sk, sv, so, sg = map(_strides, (q, k, v, out, dout))
    rows_per_block = _THREADS // 32
    _kernel("flash_backward_delta", q.dtype)(
        (-(-n * L // rows_per_block),), (_THREADS,),
        (out, dout, delta, np.int64(n * L), np.int64(L), np.int32(D), np.int64(H), so, sg))
    args = _args(L, S, D, scale, causal, H) + (sq, sk, sv, sg)
    _kernel("flash_backward_dkdv", q.dtype)(
        (n, -(-S // BLOCK_N)), (_THREADS,),
        (q, k, v, dout, lse, delta, dk, dv) + args + (_strides(dk), _strides(dv)),
        shared_mem=_smem_bytes("flash_backward_dkdv", D))
    _kernel("flash_backward_dq", q.dtype)(
        (n, -(-L // BLOCK_M)), (_THREADS,),
        (q, k, v, dout, lse, delta, dq) + args + (_strides(dq),),
        shared_mem=_smem_bytes("flash_backward_dq", D))
    return dq, dk, dv


# ------------------------------------------------------------ numpy reference
def _offsets(a):
    """The offsets in elements of a (B, H, len, D) array's entries from its first one, by
    the kernels' arithmetic: ``head(n, H, s) + row * s.l + column``."""
    B, H, rows, D = a.shape
    b, h, l, _ = (s // a.itemsize for s in a.strides)
    n = np.arange(B * H)
    return ((n // H) * b + (n % H) * h)[:, None, None] + np.arange(rows)[:, None] * l + np.arange(D)


def _memory(a):
    """The memory under ``a``, from its first entry to its last, as a flat array: what a
    kernel gets as a pointer."""
    span = 1 + sum((n - 1) * s for n, s in zip(a.shape, a.strides)) // a.itemsize
    return np.lib.stride_tricks.as_strided(a, (span,), (a.itemsize,))


def _read(a):
    """A (B, H, len, D) array's rows as (B * H, len, D), read as the kernels read them."""
    return _memory(a)[_offsets(a)]


def _write(a, x):
    """(B * H, len, D) rows ``x`` into a (B, H, len, D) array, written as the kernels write."""
    _memory(a)[_offsets(a)] = x


def _key_end(m0: int, S: int, causal: bool) -> int:
    """One past the last key that the query tile starting at ``m0`` sees."""
    return min(S, m0 + BLOCK_M) if causal else S


def _query_begin(n0: int, causal: bool) -> int:
    """The first query tile that sees the key tile starting at ``n0``."""
    return (n0 // BLOCK_M) * BLOCK_M if causal else 0


def _live(rows, cols, causal):
    return cols[None, :] <= rows[:, None] if causal else np.ones((len(rows), len(cols)), bool)


def _acc_type(dtype):
    return np.float64 if dtype == np.float64 else np.float32


def reference_forward(q, k, v, scale: float, causal: bool):
    """``flash_forward`` in numpy, tile for tile (float64 inputs stay float64)."""
    acc = _acc_type(q.dtype)
    qf, kf, vf = (a.astype(acc) for a in (q, k, v))
    n, L, D = q.shape
    S = k.shape[1]
    out = np.zeros((n, L, D), acc)
    lse = np.zeros((n, L), acc)
    with np.errstate(invalid="ignore", over="ignore"):
        for m0 in range(0, L, BLOCK_M):
            rows = np.arange(m0, min(m0 + BLOCK_M, L))
            m = np.full((n, len(rows)), -np.inf, acc)
            den = np.zeros((n, len(rows)), acc)
            o = np.zeros((n, len(rows), D), acc)
            for n0 in range(0, _key_end(m0, S, causal), BLOCK_N):
                cols = np.arange(n0, min(n0 + BLOCK_N, S))
                s = qf[:, rows] @ kf[:, cols].transpose(0, 2, 1)
                s = np.where(_live(rows, cols, causal), s * acc(scale), -np.inf)
                m_new = np.maximum(m, s.max(-1))
                alpha = np.where(m_new == -np.inf, 1, np.exp(m - m_new))
                p = np.where(s == -np.inf, 0, np.exp(s - m_new[..., None]))
                den = den * alpha + p.sum(-1)
                o = o * alpha[..., None] + p @ vf[:, cols]
                m = m_new
            out[:, rows] = o / den[..., None]
            lse[:, rows] = m + np.log(den)
    return out.astype(q.dtype), lse


def _probs(qf, kf, vf, g, lse, delta, rows, cols, scale, causal):
    """P and dS of one (query tile, key tile) pair, recomputed from the logsumexp."""
    s = qf[:, rows] @ kf[:, cols].transpose(0, 2, 1) * scale
    p = np.where(_live(rows, cols, causal), np.exp(s - lse[:, rows, None]), 0)
    dp = g[:, rows] @ vf[:, cols].transpose(0, 2, 1)
    return p, p * (dp - delta[:, rows, None])


def reference_backward(q, k, v, out, lse, dout, scale: float, causal: bool):
    """``flash_backward`` in numpy: delta first, then dk and dv per key tile over the
    query tiles that see it, then dq per query tile over its key tiles."""
    acc = _acc_type(q.dtype)
    qf, kf, vf, of, g = (a.astype(acc) for a in (q, k, v, out, dout))
    lse = lse.astype(acc)
    L, S = q.shape[1], k.shape[1]
    delta = (g * of).sum(-1)
    dq, dk, dv = np.zeros(qf.shape, acc), np.zeros(kf.shape, acc), np.zeros(vf.shape, acc)
    with np.errstate(over="ignore"):
        for n0 in range(0, S, BLOCK_N):
            cols = np.arange(n0, min(n0 + BLOCK_N, S))
            for m0 in range(_query_begin(n0, causal), L, BLOCK_M):
                rows = np.arange(m0, min(m0 + BLOCK_M, L))
                p, ds = _probs(qf, kf, vf, g, lse, delta, rows, cols, acc(scale), causal)
                dv[:, cols] += p.transpose(0, 2, 1) @ g[:, rows]
                dk[:, cols] += ds.transpose(0, 2, 1) @ qf[:, rows]
        for m0 in range(0, L, BLOCK_M):
            rows = np.arange(m0, min(m0 + BLOCK_M, L))
            for n0 in range(0, _key_end(m0, S, causal), BLOCK_N):
                cols = np.arange(n0, min(n0 + BLOCK_N, S))
                _, ds = _probs(qf, kf, vf, g, lse, delta, rows, cols, acc(scale), causal)
                dq[:, rows] += ds @ kf[:, cols]
    return (dq * acc(scale)).astype(q.dtype), (dk * acc(scale)).astype(k.dtype), dv.astype(v.dtype)
