"""Tensor element types with PyTorch's names (``dg.float32``, ``dg.int64``, ...)."""
from __future__ import annotations

import numpy as np

import ml_dtypes as _ml_dtypes  # the bfloat16 numpy dtype (shared with CuPy 14 and JAX)

BFLOAT16_NP = np.dtype(_ml_dtypes.bfloat16)


def is_float_np(npd) -> bool:
    """Whether numpy dtype ``npd`` is a real floating-point type: kind "f", or
    bfloat16 (whose numpy kind is "V")."""
    return npd.kind == "f" or npd == BFLOAT16_NP


def is_bf16_np(npd) -> bool:
    return npd == BFLOAT16_NP


def kind_of(npd) -> str:
    """numpy's kind letter, with "f" for bfloat16 (numpy says "V")."""
    return "f" if is_bf16_np(npd) else npd.kind


class dtype:
    __slots__ = ("name", "np", "is_floating_point", "is_signed", "itemsize")

    def __init__(self, name: str, np_dtype):
        self.name = name
        self.np = np.dtype(np_dtype)
        self.is_floating_point = is_float_np(self.np)
        self.is_signed = self.is_floating_point or self.np.kind == "i"
        self.itemsize = self.np.itemsize

    def __repr__(self):
        return f"distgrad.{self.name}"

    def __reduce__(self):
        return (to_dtype, (self.name,))


float16 = half = dtype("float16", np.float16)
float32 = float = dtype("float32", np.float32)
float64 = double = dtype("float64", np.float64)
uint8 = dtype("uint8", np.uint8)
int8 = dtype("int8", np.int8)
int16 = short = dtype("int16", np.int16)
int32 = int = dtype("int32", np.int32)
int64 = long = dtype("int64", np.int64)
bool = dtype("bool", np.bool_)
bfloat16 = dtype("bfloat16", BFLOAT16_NP)

_ALL = (float16, float32, float64, uint8, int8, int16, int32, int64, bool, bfloat16)
_BY_NP = {d.np: d for d in _ALL}
_BY_NAME = {d.name: d for d in _ALL}
_BY_NAME.update(half=float16, float=float32, double=float64, short=int16, int=int32, long=int64)

_default = [float32]


def get_default_dtype() -> dtype:
    return _default[0]


def set_default_dtype(d: dtype) -> None:
    d = to_dtype(d)
    if not d.is_floating_point:
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default[0] = d


def from_numpy_dtype(npd) -> dtype:
    try:
        return _BY_NP[npd]
    except KeyError:
        raise TypeError(f"numpy dtype {npd} has no distgrad equivalent; "
                        f"supported: {', '.join(d.name for d in _ALL)}") from None


def to_dtype(d) -> dtype:
    """Accept a distgrad dtype, a numpy dtype or type, or a name like 'float32'."""
    if isinstance(d, dtype):
        return d
    if isinstance(d, str):
        try:
            return _BY_NAME[d.removeprefix("distgrad.").removeprefix("torch.")]
        except KeyError:
            raise TypeError(f"unknown dtype name {d!r}") from None
    return from_numpy_dtype(np.dtype(d))


def to_np(d):
    """The numpy dtype for a distgrad dtype (or None)."""
    return None if d is None else to_dtype(d).np
