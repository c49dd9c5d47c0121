"""``autocast``: regions in which ops may run in a lower precision, as ``torch.autocast``.

What distgrad does today:

- The region's state is tracked exactly as in PyTorch (``is_autocast_enabled``,
  ``get_autocast_dtype``, nesting, ``enabled=False`` regions, use as a decorator),
  including PyTorch's fallbacks: ``device_type='cuda'`` without a usable GPU warns
  and disables itself, and a CPU region asked for a dtype other than float16 (or
  bfloat16) warns and disables itself.
- distgrad has no bfloat16 dtype yet (it is planned with mixed precision on the GPU).
  A region that is enabled with bfloat16, which is the CPU default, raises
  ``NotImplementedError`` saying so; pass ``dtype=distgrad.float16`` or
  ``enabled=False``.
- An enabled float16 region records its dtype, but distgrad's ops do not consult
  it yet: inside it they compute in their inputs' dtypes (float32 stays float32),
  that is, at a higher precision than PyTorch's autocast would. A one-time
  ``UserWarning`` says so. Ops that add autocast support ask ``cast_dtype(device)``
  for the dtype to cast their floating inputs to.
"""
from __future__ import annotations

import functools
import warnings

from .. import dtype as _dt
from ..backend import device as _device

_DEVICE_TYPES = ("cpu", "cuda")
_state = {"cpu": {"enabled": False, "dtype": _dt.float16},
          "cuda": {"enabled": False, "dtype": _dt.float16}}
_cache = {"enabled": True}
_warned = {"ops": False}

BFLOAT16_MESSAGE = ("bfloat16 is not supported yet in distgrad (it has no bfloat16 dtype); "
                    "use autocast(..., dtype=distgrad.float16), or enabled=False")


def _device_type(device_type) -> str:
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    t = _device(device_type).type  # raises for an unknown device string
    return t


def _is_bfloat16(dtype) -> bool:
    return dtype == "bfloat16" or getattr(dtype, "__name__", None) == "bfloat16" or str(dtype).endswith("bfloat16")


def is_autocast_available(device_type: str) -> bool:
    return device_type in _DEVICE_TYPES


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for ``device_type`` ('cuda' when omitted, as in PyTorch)."""
    return _state[_device_type(device_type or "cuda")]["enabled"]


def set_autocast_enabled(device_type: str, enabled: bool) -> None:
    _state[_device_type(device_type)]["enabled"] = bool(enabled)


def get_autocast_dtype(device_type: str):
    """The dtype of ``device_type``'s autocast regions (float16 by default; PyTorch's
    CPU default is bfloat16, which distgrad does not have)."""
    return _state[_device_type(device_type)]["dtype"]


def set_autocast_dtype(device_type: str, dtype) -> None:
    if _is_bfloat16(dtype):
        raise NotImplementedError(BFLOAT16_MESSAGE)
    _state[_device_type(device_type)]["dtype"] = dtype


def is_autocast_cache_enabled() -> bool:
    return _cache["enabled"]


def cast_dtype(device_type: str):
    """The dtype ops on ``device_type`` should cast floating inputs to, or None outside
    an enabled region."""
    s = _state[device_type]
    return s["dtype"] if s["enabled"] else None


class autocast:
    """``autocast(device_type, dtype=None, enabled=True, cache_enabled=None)``: a context
    manager and decorator (see the module docstring for what it changes in distgrad)."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None):
        self.device = _device_type(device_type)
        self.fast_dtype = dtype
        if dtype is None:
            self.fast_dtype = "bfloat16" if self.device == "cpu" else _dt.float16
        self._cache_enabled = _cache["enabled"] if cache_enabled is None else bool(cache_enabled)
        enabled = bool(enabled)
        if enabled and self.device == "cuda":
            from .. import cuda

            if not cuda.is_available():
                warnings.warn("CUDA is not available. Disabling autocast.", UserWarning, stacklevel=2)
                enabled = False
        if enabled and not _is_bfloat16(self.fast_dtype) and self.fast_dtype != _dt.float16:
            if self.device == "cpu":
                warnings.warn("In CPU autocast, but the target dtype is not supported. Disabling autocast.\n"
                              "CPU Autocast only supports dtypes of distgrad.float16 currently.",
                              UserWarning, stacklevel=2)
            else:
                warnings.warn("In CUDA autocast, but the target dtype is not supported. Disabling autocast.\n"
                              "CUDA Autocast only supports dtypes of distgrad.float16 currently.",
                              UserWarning, stacklevel=2)
            enabled = False
        if enabled and _is_bfloat16(self.fast_dtype):
            raise NotImplementedError(
                (f"autocast(device_type='{self.device}') defaults to bfloat16, but " if dtype is None else "")
                + BFLOAT16_MESSAGE)
        self._enabled = enabled
        self._saved = []

    def __enter__(self):
        s = _state[self.device]
        self._saved.append((s["enabled"], s["dtype"], _cache["enabled"]))
        s["enabled"] = self._enabled
        if self._enabled:
            s["dtype"] = self.fast_dtype
            if not _warned["ops"]:
                _warned["ops"] = True
                warnings.warn("distgrad's ops do not cast to float16 under autocast yet: inside this "
                              "region they compute in their inputs' dtypes", UserWarning, stacklevel=2)
        _cache["enabled"] = self._cache_enabled
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        s = _state[self.device]
        s["enabled"], s["dtype"], _cache["enabled"] = self._saved.pop()
        return False

    def __call__(self, func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with self:
                return func(*args, **kwargs)
        return wrapper


def custom_fwd(fwd=None, *, device_type: str, cast_inputs=None):
    """Decorator for a custom ``autograd.Function``'s ``forward``: with ``cast_inputs``,
    inside an enabled autocast region its floating tensor arguments are cast to that
    dtype and it runs with autocast off, as in PyTorch."""
    if fwd is None:
        return functools.partial(custom_fwd, device_type=device_type, cast_inputs=cast_inputs)
    device_type = _device_type(device_type)

    @functools.wraps(fwd)
    def decorate_fwd(*args, **kwargs):
        if cast_inputs is None or not is_autocast_enabled(device_type):
            return fwd(*args, **kwargs)
        from ..tensor import Tensor

        def cast(v):
            if isinstance(v, Tensor) and v.is_floating_point():
                return v.to(cast_inputs)
            if isinstance(v, (list, tuple)):
                return type(v)(cast(x) for x in v)
            return v
        with autocast(device_type, enabled=False):
            return fwd(*cast(args), **{k: cast(v) for k, v in kwargs.items()})
    return decorate_fwd


def custom_bwd(bwd=None, *, device_type: str):
    """Decorator for a custom ``autograd.Function``'s ``backward`` (runs it as is: distgrad's
    backward already runs under the autocast state it is called in)."""
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)
    _device_type(device_type)
    return bwd
