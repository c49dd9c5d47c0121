"""``distgrad.accelerator``: the device-agnostic view of the GPU, as ``torch.accelerator``.
The only accelerator distgrad knows is CUDA (through CuPy)."""
from __future__ import annotations

from . import backend


def is_available() -> bool:
    """True only where a GPU is usable."""
    return backend.cuda_available()


def current_accelerator(check_available: bool = False):
    """``device('cuda')`` where CuPy can run on a GPU, else None."""
    if backend.cuda_available():
        return backend.device("cuda")
    return None


def device_count() -> int:
    from . import cuda

    return cuda.device_count()


def current_device_index() -> int:
    from . import cuda

    return cuda.current_device()


current_device_idx = current_device_index


def set_device_index(device) -> None:
    from . import cuda

    cuda.set_device(device)


set_device_idx = set_device_index


def synchronize(device=None) -> None:
    from . import cuda

    cuda.synchronize(device)
