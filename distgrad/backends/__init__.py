"""``distgrad.backends``: the switches PyTorch keeps in ``torch.backends`` (``cuda``,
``cudnn``, ``mps``, ``cpu``), and the float32 matmul precision and deterministic
algorithms settings that ``distgrad`` re-exports.

distgrad computes on numpy (CPU) or CuPy (GPU). On the CPU these settings are recorded
and read back, as on PyTorch's CPU build; each docstring says where one changes what
the GPU does.
"""
from __future__ import annotations

import os
import warnings

from . import cpu, cuda, cudnn, mps  # noqa: F401

_PRECISIONS = ("highest", "high", "medium")
_state = {"precision": "highest", "deterministic": False, "warn_only": False}


def get_float32_matmul_precision() -> str:
    """The precision of float32 matrix products: 'highest' (the default), 'high' or 'medium'."""
    return _state["precision"]


def set_float32_matmul_precision(precision: str) -> None:
    """Set the precision of float32 matrix products, as ``torch.set_float32_matmul_precision``.

    'highest' computes in full float32; 'high' and 'medium' allow TensorFloat-32. An
    unknown value warns and changes nothing, as in PyTorch. On the CPU the value is
    recorded only (numpy always computes in float32 or better, as PyTorch's CPU matmul).
    On a GPU, 'high' and 'medium' set CuPy's float32 compute type to TF32 for the matrix
    products CuPy runs (``cupy.matmul``/``dot``/``tensordot``, on Ampere or newer), and
    'highest' sets it back; this is ``backends.cuda.matmul.allow_tf32``.
    """
    if precision not in _PRECISIONS:
        warnings.warn(f"{precision} is not one of 'highest', 'high', or 'medium'; the current "
                      "set_float32_matmul_precision call has no effect.", UserWarning, stacklevel=2)
        return
    _state["precision"] = precision
    _apply_tf32(precision != "highest")


def _apply_tf32(allow: bool) -> None:
    """Make CuPy's float32 matrix products use TF32 (or not). Before CuPy is loaded,
    the ``CUPY_TF32`` environment variable carries the choice: CuPy reads it the first
    time it picks a float32 compute type."""
    from .. import backend

    cp = backend._cupy
    if cp is None:
        if allow:
            os.environ["CUPY_TF32"] = "1"
        elif os.environ.get("CUPY_TF32", "0") != "0":
            os.environ["CUPY_TF32"] = "0"
        return
    try:
        from cupy._core import _routines_linalg as linalg
    except ImportError:  # a CuPy without the switch: nothing to set
        return
    import numpy as np

    linalg.set_compute_type(np.float32, getattr(linalg, "COMPUTE_TYPE_TF32", 7) if allow
                            else getattr(linalg, "COMPUTE_TYPE_DEFAULT", 1))


def tf32_enabled() -> bool:
    """Whether float32 GPU matrix products may use TF32 (for kernels that call cuBLAS
    themselves: pick ``CUBLAS_COMPUTE_32F_FAST_TF32`` when this is true)."""
    return _state["precision"] != "highest"


def use_deterministic_algorithms(mode: bool, *, warn_only: bool = False) -> None:
    """Ask for deterministic algorithms, as ``torch.use_deterministic_algorithms``.

    Recorded only: every distgrad op is deterministic on the CPU, and on a GPU the
    reductions distgrad runs give the same result for the same input on the same
    device (scatter-add style accumulations through atomics are the exception)."""
    if not isinstance(mode, bool):
        raise TypeError(f"use_deterministic_algorithms(): argument 'mode' must be bool, not {type(mode).__name__}")
    _state["deterministic"] = mode
    _state["warn_only"] = bool(warn_only)


def are_deterministic_algorithms_enabled() -> bool:
    return _state["deterministic"]


def is_deterministic_algorithms_warn_only_enabled() -> bool:
    return _state["deterministic"] and _state["warn_only"]
