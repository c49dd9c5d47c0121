"""``distgrad.cuda``: the GPU's availability, selection, synchronization, seeding
and memory statistics, with PyTorch's names (CuPy underneath)."""
from __future__ import annotations

from . import backend


def is_available() -> bool:
    return backend.cuda_available()


def device_count() -> int:
    return backend.cupy().cuda.runtime.getDeviceCount() if is_available() else 0


def current_device() -> int:
    return backend.cupy().cuda.runtime.getDevice()


def set_device(device) -> None:
    d = backend.device(device)
    backend.cupy().cuda.Device(d.index or 0).use()


def synchronize(device=None) -> None:
    backend.cupy()
    backend.synchronize(device)


def manual_seed(seed: int) -> None:
    backend.cupy().random.seed(int(seed) & 0xFFFFFFFF)


manual_seed_all = manual_seed


def memory_allocated(device=None) -> int:
    """Bytes in use in CuPy's memory pool."""
    return backend.cupy().get_default_memory_pool().used_bytes()


def memory_reserved(device=None) -> int:
    return backend.cupy().get_default_memory_pool().total_bytes()


def empty_cache() -> None:
    backend.cupy().get_default_memory_pool().free_all_blocks()
