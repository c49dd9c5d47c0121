"""``distgrad.backends.cudnn``: PyTorch's cuDNN switches, recorded and read back.

distgrad does not call cuDNN (its GPU kernels are CuPy's and its own), so
``is_available()`` is False and the flags change nothing; code that sets
``cudnn.benchmark = True`` or ``cudnn.deterministic = True`` runs unchanged."""
from __future__ import annotations

enabled = True
benchmark = False
benchmark_limit = 10
deterministic = False
allow_tf32 = True


def is_available() -> bool:
    return False


def version():
    return None
