"""Fused GPU kernels (CuPy ElementwiseKernels) for ops where one pass over memory
instead of several pays: GELU and its gradient, and the Adam/AdamW update.

Each is used behind a single check in the op's own code (``if xp is not numpy``)
and is tested against the unfused array code on the GPU. Kernels are compiled on
first use.
"""
from __future__ import annotations

import functools

from .. import backend

_GELU_TANH = """
    const T k = 0.7978845608028654;
    const T c = 0.044715;
    T u = k * (x + c * x * x * x);
    T s = 1 / (1 + exp(-2 * u));
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


def adam_update(p, g, m, v, b1, b2, step_size, inv_sqrt_bc2, eps, decay) -> None:
    """In place: decoupled decay, both moments, and the parameter update."""
    f = p.dtype.type
    _kernel("adam")(g, f(b1), f(b2), f(step_size), f(inv_sqrt_bc2), f(eps), f(decay), p, m, v)
