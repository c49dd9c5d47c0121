"""``distgrad.backends.cuda``: ``matmul.allow_tf32`` and the other cuBLAS switches."""
from __future__ import annotations


def is_built() -> bool:
    """Whether distgrad can run on CUDA here: CuPy is importable (no GPU needed)."""
    import importlib.util

    return importlib.util.find_spec("cupy") is not None


class cuBLASModule:
    """``backends.cuda.matmul``. ``allow_tf32`` is ``get_float32_matmul_precision() !=
    'highest'`` and setting it sets that precision ('high' or 'highest'), as in PyTorch;
    on a GPU it sets CuPy's float32 compute type (see ``set_float32_matmul_precision``).
    The reduced-precision-reduction flags are recorded only."""

    _flags = ("allow_fp16_reduced_precision_reduction", "allow_bf16_reduced_precision_reduction")

    def __init__(self):
        object.__setattr__(self, "_values", {name: True for name in self._flags})

    def __getattr__(self, name):
        if name == "allow_tf32":
            from . import get_float32_matmul_precision

            return get_float32_matmul_precision() != "highest"
        if name in self._flags:
            return self._values[name]
        raise AttributeError("Unknown attribute " + name)

    def __setattr__(self, name, value):
        if name != "allow_tf32" and name not in self._flags:
            raise AttributeError("Unknown attribute " + name)
        if not isinstance(value, bool):
            raise RuntimeError(f"set_{name} expects a bool, but got {type(value).__name__}")
        if name == "allow_tf32":
            from . import set_float32_matmul_precision

            set_float32_matmul_precision("high" if value else "highest")
        else:
            self._values[name] = value


matmul = cuBLASModule()
