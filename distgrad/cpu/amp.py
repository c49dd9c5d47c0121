"""``distgrad.cpu.amp``: the deprecated spelling of ``distgrad.amp.autocast('cpu')``."""
from __future__ import annotations

import warnings

from ..amp import autocast as _autocast


class autocast(_autocast):
    def __init__(self, enabled: bool = True, dtype=None, cache_enabled: bool = True):
        warnings.warn("`distgrad.cpu.amp.autocast(args...)` is deprecated. Please use "
                      "`distgrad.amp.autocast('cpu', args...)` instead.", FutureWarning, stacklevel=2)
        super().__init__("cpu", dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)
