"""CPU kernels compiled by numba: LayerNorm forward and backward and softmax's gradient
in one pass over each row, and float32 erf, GELU, its gradient and softmax in one pass
each, where the numpy bodies in ``cpu_kernels`` take a dozen to thirty passes over
memory (inside a training step, over DRAM: the products between them evict the cache).

numba (as numexpr) calls the scalar libm for exp and tanh, 5-100x slower than numpy's
SIMD loops, so the float32 kernels carry their own (``_jit_bodies``: exp by range
reduction and Cephes' expf polynomial, tanh from it, erf by its Taylor series near 0
and tanh(x P(x^2)) beyond, GELU's Phi(x) in the form of Abramowitz and Stegun's 7.1.26
with a polynomial fitted for it, sharing the exp of the normal density), which LLVM
vectorizes, with multiplies and adds fused where the hardware can. Row sums are
reassociated (``fastmath`` with reassociation and contraction only: NaN and infinity
keep their IEEE meaning) so that they vectorize too; a loop that sums stores nothing,
so that it is always the vectorized loop that runs and the bits do not depend on where
the arrays lie (``_jit_bodies.ln_bwd`` says why). index_add along dim 0 (an
embedding's gradient) is a compiled loop in numpy's add.at order. The compiled and the
numpy bodies agree to a few roundings. Every kernel runs serially on a block of whole
rows and releases the GIL; ``cpu_kernels._launch`` spreads the blocks over its
threads, so a row's result does not depend on the thread count.

numba is imported on first use; ``DISTGRAD_NUMBA=0`` (or numba not installed, or its
import failing) keeps the numpy bodies. The kernels live in ``_jit_bodies`` and are
cached next to it (``__pycache__``) or in numba's user cache: a machine compiles them
once (about 4 s for every kernel in both dtypes on the 2-core development machine),
and a later process takes about 0.2 s to load numba and the kernels a step uses.
"""
from __future__ import annotations

import os
import warnings

_kernels = None      # the compiled functions, once loaded
_failed = False      # numba missing or broken: numpy bodies from then on


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
        from . import _jit_bodies  # imports numba
    except Exception as e:  # not installed, or an llvmlite that does not load
        if not (isinstance(e, ImportError) and e.name in ("numba", "llvmlite")):
            warnings.warn(f"distgrad: numba failed to import ({type(e).__name__}: {e}); the CPU row "
                          "kernels use numpy. Set DISTGRAD_NUMBA=0 to silence this.", RuntimeWarning,
                          stacklevel=3)
        _failed = True
        return None
    _kernels = _jit_bodies.KERNELS
    return _kernels
