"""``distgrad.backends.cuda``: ``matmul.allow_tf32`` and the other cuBLAS switches, and
the choice of kernels behind ``scaled_dot_product_attention`` (``enable_flash_sdp``,
``enable_math_sdp``, ``sdp_kernel``)."""
from __future__ import annotations

import contextlib


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


# ------------------------------------------------- scaled_dot_product_attention
_sdp = {"flash": True, "math": True}


def _check_bool(name: str, value) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}(): argument 'enabled' must be bool, not {type(value).__name__}")


def enable_flash_sdp(enabled: bool) -> None:
    """Allow (the default) or forbid the flash attention kernels for GPU tensors of
    float32, float16 or bfloat16 with a head dim up to 128, no mask and no dropout."""
    _check_bool("enable_flash_sdp", enabled)
    _sdp["flash"] = enabled


def flash_sdp_enabled() -> bool:
    return _sdp["flash"]


def enable_math_sdp(enabled: bool) -> None:
    """Allow (the default) or forbid the math path: the attention matrix computed in
    full (with the fused softmax kernels on a GPU). As in PyTorch, a GPU call that no
    allowed kernel can take raises; on the CPU the math path always runs."""
    _check_bool("enable_math_sdp", enabled)
    _sdp["math"] = enabled


def math_sdp_enabled() -> bool:
    return _sdp["math"]


@contextlib.contextmanager
def sdp_kernel(enable_flash: bool = True, enable_math: bool = True, enable_mem_efficient: bool = True,
               enable_cudnn: bool = True):
    """Within the block, allow only the attention kernels asked for, as PyTorch's
    ``torch.backends.cuda.sdp_kernel``. distgrad has no memory-efficient or cuDNN
    attention kernel, so those two choices change nothing."""
    saved = dict(_sdp)
    enable_flash_sdp(enable_flash)
    enable_math_sdp(enable_math)
    try:
        yield
    finally:
        _sdp.update(saved)
