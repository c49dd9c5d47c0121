"""``distgrad.cuda.amp``: the deprecated spellings of ``distgrad.amp``'s CUDA
``autocast`` and ``GradScaler``, kept (with PyTorch's FutureWarning) so older code runs."""
from __future__ import annotations

import warnings

from ..amp import GradScaler as _GradScaler
from ..amp import autocast as _autocast
from ..amp import custom_bwd, custom_fwd  # noqa: F401


class autocast(_autocast):
    def __init__(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        warnings.warn("`distgrad.cuda.amp.autocast(args...)` is deprecated. Please use "
                      "`distgrad.amp.autocast('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        from ..dtype import float16

        super().__init__("cuda", dtype=float16 if dtype is None else dtype, enabled=enabled,
                         cache_enabled=cache_enabled)


class GradScaler(_GradScaler):
    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 2000, enabled: bool = True):
        warnings.warn("`distgrad.cuda.amp.GradScaler(args...)` is deprecated. Please use "
                      "`distgrad.amp.GradScaler('cuda', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cuda", init_scale=init_scale, growth_factor=growth_factor,
                         backoff_factor=backoff_factor, growth_interval=growth_interval, enabled=enabled)
