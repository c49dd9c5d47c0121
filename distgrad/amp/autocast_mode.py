"""``autocast``: regions in which ops run in a lower precision, as ``torch.autocast``.

Inside an enabled region, the ops PyTorch autocasts are autocast the same way, per
device type (``distgrad.amp.policy`` has the lists): matrix products, linear,
convolutions and attention run in the region's dtype (``float16``, or ``bfloat16``,
the CPU default), losses and the numerically delicate ops in float32, and ops with
mixed inputs in the widest. float64 tensors are never cast. The casts are ordinary
differentiable ``to()`` calls, so gradients come back in each parameter's own dtype
(float32 master weights). Within one region the low-precision copy of a weight is
made once and reused (``cache_enabled``), as PyTorch caches it.

The region's state is tracked as in PyTorch (``is_autocast_enabled``,
``get_autocast_dtype``, nesting, ``enabled=False`` regions, use as a decorator),
with PyTorch's fallbacks: ``device_type='cuda'`` without a usable GPU warns and
disables itself, and an unsupported dtype warns and disables the region.
"""
from __future__ import annotations

import functools
import warnings
import weakref

from .. import dtype as _dt
from ..backend import device as _device

_DEVICE_TYPES = ("cpu", "cuda")
_state = {"cpu": {"enabled": False, "dtype": None},
          "cuda": {"enabled": False, "dtype": _dt.float16}}
_cache = {"enabled": True}
_active = [False]          # some device's region is enabled and we are not inside an autocast op
_depth = [0]               # nesting of entered regions (the cast cache lives while > 0)
_casts: dict = {}          # id(weight) -> (weakref to it, its version, dtype, the cast copy)


def _bfloat16():
    return getattr(_dt, "bfloat16", None)


def _refresh() -> None:
    _active[0] = _state["cpu"]["enabled"] or _state["cuda"]["enabled"]


def _device_type(device_type) -> str:
    if not isinstance(device_type, str):
        raise ValueError(f"Expected `device_type` of type `str`, got: `{type(device_type)}`")
    t = _device(device_type).type  # raises for an unknown device string
    return t


def _is_bfloat16(dtype) -> bool:
    return dtype == "bfloat16" or getattr(dtype, "__name__", None) == "bfloat16" or str(dtype).endswith("bfloat16")


def _resolve(dtype):
    """A distgrad dtype for ``dtype`` (names included), or the value as given."""
    if _is_bfloat16(dtype):
        bf16 = _bfloat16()
        if bf16 is None:
            raise NotImplementedError("bfloat16 needs the ml_dtypes package (pip install ml_dtypes); use "
                                      "autocast(..., dtype=distgrad.float16), or enabled=False")
        return bf16
    try:
        return _dt.to_dtype(dtype)
    except TypeError:
        return dtype


def is_autocast_available(device_type: str) -> bool:
    return device_type in _DEVICE_TYPES


def is_autocast_enabled(device_type: str | None = None) -> bool:
    """Whether autocast is on for ``device_type`` ('cuda' when omitted, as in PyTorch)."""
    return _state[_device_type(device_type or "cuda")]["enabled"]


def set_autocast_enabled(device_type: str, enabled: bool) -> None:
    _state[_device_type(device_type)]["enabled"] = bool(enabled)
    _refresh()


def get_autocast_dtype(device_type: str):
    """The dtype of ``device_type``'s autocast regions (bfloat16 on the CPU, float16 on
    CUDA, as in PyTorch)."""
    d = _device_type(device_type)
    if _state[d]["dtype"] is None:
        _state[d]["dtype"] = _resolve("bfloat16") if d == "cpu" else _dt.float16
    return _state[d]["dtype"]


def set_autocast_dtype(device_type: str, dtype) -> None:
    _state[_device_type(device_type)]["dtype"] = _resolve(dtype)


def is_autocast_cache_enabled() -> bool:
    return _cache["enabled"]


def set_autocast_cache_enabled(enabled: bool) -> None:
    _cache["enabled"] = bool(enabled)


def clear_autocast_cache() -> None:
    _casts.clear()


def cast_dtype(device_type: str):
    """The dtype ops on ``device_type`` cast floating inputs to, or None outside an
    enabled region."""
    s = _state[device_type]
    return get_autocast_dtype(device_type) if s["enabled"] else None


# ---------------------------------------------------------------- casting
def _cast(value, to, device_type):
    """``value`` with its eligible floating tensors (on ``device_type``, not float64)
    cast to ``to``; lists and tuples element by element."""
    from ..backend import is_device_array
    from ..tensor import Tensor

    if isinstance(value, Tensor):
        d = value.dtype
        if (d is to or not d.is_floating_point or d is _dt.float64
                or ("cuda" if is_device_array(value._data) else "cpu") != device_type):
            return value
        if _cache["enabled"] and value._grad_fn is None and value.requires_grad and to is not _dt.float32:
            key = id(value)
            hit = _casts.get(key)
            if hit is not None and hit[0]() is value and hit[1] == value._vc[0] and hit[2] is to:
                return hit[3]
            out = value.to(to)
            _casts[key] = (weakref.ref(value), value._vc[0], to, out)
            return out
        return value.to(to)
    if isinstance(value, (list, tuple)) and any(isinstance(v, Tensor) for v in value):
        return type(value)(_cast(v, to, device_type) for v in value)
    return value


def snapshot() -> dict:
    """The autocast state of every device type (for recomputing a checkpointed block
    under the state its forward ran in)."""
    return {d: (s["enabled"], s["dtype"]) for d, s in _state.items()}


class restored:
    """Inside, autocast is as ``snapshot()`` said (also during backward, where it is
    otherwise off); on exit, as before."""

    def __init__(self, snap: dict):
        self.snap = snap

    def __enter__(self):
        self.saved = (snapshot(), _active[0])
        for d, (enabled, dtype) in self.snap.items():
            _state[d]["enabled"], _state[d]["dtype"] = enabled, dtype
        _refresh()
        return self

    def __exit__(self, *exc):
        before, active = self.saved
        for d, (enabled, dtype) in before.items():
            _state[d]["enabled"], _state[d]["dtype"] = enabled, dtype
        _active[0] = active
        return False


def _without_autocast(fn, args, kwargs):
    """Run an autocast op: autocast is off inside it (its own ops are not cast again)."""
    _active[0] = False
    try:
        return fn(*args, **kwargs)
    finally:
        _refresh()


class autocast:
    """``autocast(device_type, dtype=None, enabled=True, cache_enabled=None)``: a context
    manager and decorator (see the module's text for what it changes)."""

    def __init__(self, device_type: str, dtype=None, enabled: bool = True, cache_enabled: bool | None = None):
        self.device = _device_type(device_type)
        enabled = bool(enabled)
        if dtype is None:
            dtype = get_autocast_dtype(self.device) if enabled else None
        self.fast_dtype = _resolve(dtype) if dtype is not None else None
        self._cache_enabled = _cache["enabled"] if cache_enabled is None else bool(cache_enabled)
        if enabled and self.device == "cuda":
            from .. import cuda

            if not cuda.is_available():
                warnings.warn("CUDA is not available. Disabling autocast.", UserWarning, stacklevel=2)
                enabled = False
        supported = (_dt.float16, _bfloat16())
        if enabled and self.fast_dtype not in supported:
            where = "CPU" if self.device == "cpu" else "CUDA"
            warnings.warn(f"In {where} autocast, but the target dtype is not supported. Disabling autocast.\n"
                          f"{where} Autocast only supports dtypes of distgrad.bfloat16, distgrad.float16 "
                          "currently.", UserWarning, stacklevel=2)
            enabled = False
        self._enabled = enabled
        self._saved = []

    def __enter__(self):
        s = _state[self.device]
        self._saved.append((s["enabled"], s["dtype"], _cache["enabled"]))
        s["enabled"] = self._enabled
        if self._enabled:
            s["dtype"] = self.fast_dtype
        _cache["enabled"] = self._cache_enabled
        _depth[0] += 1
        _refresh()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        s = _state[self.device]
        s["enabled"], s["dtype"], _cache["enabled"] = self._saved.pop()
        _depth[0] -= 1
        if _depth[0] == 0:
            _casts.clear()     # as PyTorch: the cache lives for the outermost region
        _refresh()
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
    backward runs under the autocast state it is called in)."""
    if bwd is None:
        return functools.partial(custom_bwd, device_type=device_type)
    _device_type(device_type)
    return bwd
