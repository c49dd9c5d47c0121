"""``distgrad.backends.cpu``."""
from __future__ import annotations


def get_cpu_capability() -> str:
    """The widest SIMD instruction set numpy dispatches to here ('AVX512', 'AVX2',
    'NO AVX' on x86; 'DEFAULT' elsewhere), in PyTorch's spelling."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as features
    if features.get("AVX512F") and features.get("AVX512BW"):
        return "AVX512"
    if features.get("AVX2"):
        return "AVX2"
    if "AVX" in features:
        return "NO AVX"
    return "DEFAULT"
