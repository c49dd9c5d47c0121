"""``distgrad.cuda``: the GPU's availability, selection, synchronization, seeding
and memory statistics, with PyTorch's names (CuPy underneath).

Without a usable GPU the functions behave as PyTorch's do there: the seeding
functions do nothing (PyTorch queues them until CUDA starts; here it never does),
the memory statistics are 0 and ``empty_cache`` does nothing, while
``current_device``, ``synchronize``, ``set_device``, ``initial_seed`` and the device
queries raise."""
from __future__ import annotations

from .. import backend
from . import amp  # noqa: F401


def is_available() -> bool:
    return backend.cuda_available()


def is_initialized() -> bool:
    """Whether CuPy has been loaded for a GPU (it loads lazily, at the first GPU use)."""
    return backend._cupy is not None


def init() -> None:
    backend.cupy()


def device_count() -> int:
    return backend.cupy().cuda.runtime.getDeviceCount() if is_available() else 0


def current_device() -> int:
    return backend.cupy().cuda.runtime.getDevice()


def set_device(device) -> None:
    d = backend.device(device)
    backend.cupy().cuda.Device(d.index or 0).use()


def _index(device) -> int:
    if device is None:
        return current_device()
    if isinstance(device, int):
        return device
    d = backend.device(device)
    return d.index if d.index is not None else current_device()


def get_device_name(device=None) -> str:
    cp = backend.cupy()
    name = cp.cuda.runtime.getDeviceProperties(_index(device))["name"]
    return name.decode() if isinstance(name, bytes) else name


def get_device_capability(device=None) -> tuple:
    """(major, minor) compute capability, as ``torch.cuda.get_device_capability``."""
    cc = backend.cupy().cuda.Device(_index(device)).compute_capability
    return int(cc[:-1]), int(cc[-1])


def is_bf16_supported(including_emulation: bool = True) -> bool:
    """Whether bfloat16 tensors can live on the GPU: CUDA is available and CuPy is
    version 14 or newer (the first to take ml_dtypes' bfloat16 arrays)."""
    if not is_available():
        return False
    try:
        major = int(str(backend.cupy().__version__).split(".")[0])
    except (RuntimeError, ValueError):
        return False
    return major >= 14


def synchronize(device=None) -> None:
    backend.cupy()
    backend.synchronize(device)


# ------------------------------------------------------------------ seeding
# Each GPU has its own counter-based generator (``distgrad.random.DeviceGenerator``):
# its state is (seed, offset), saved and restored by checkpointing and ``fork_rng``.
def manual_seed(seed: int) -> None:
    """Seed the current GPU's generator; nothing without a GPU, as in PyTorch."""
    if is_available():
        from .. import random

        random.device_generator(current_device()).manual_seed(int(seed))


def manual_seed_all(seed: int) -> None:
    """Seed every GPU's generator (also those not used yet); nothing without a GPU."""
    if is_available():
        from .. import random

        random._cuda_seed = int(seed)
        for i in range(device_count()):
            random.device_generator(i).manual_seed(int(seed))


def seed() -> None:
    """Seed the current GPU's generator with a random number; nothing without a GPU."""
    if is_available():
        from .. import random

        random.device_generator(current_device()).seed()


def seed_all() -> None:
    if is_available():
        import numpy as np

        manual_seed_all(int(np.random.SeedSequence().entropy) & ((1 << 63) - 1))


def initial_seed() -> int:
    """The current GPU generator's seed."""
    backend.cupy()
    from .. import random

    return random.device_generator(current_device()).initial_seed()


def get_rng_state(device="cuda"):
    """The state of a GPU's generator: a 16-byte uint8 tensor (seed, offset)."""
    backend.cupy()
    from .. import random

    return random.device_generator(_index(device)).get_state()


def set_rng_state(new_state, device="cuda") -> None:
    backend.cupy()
    from .. import random

    random.device_generator(_index(device)).set_state(new_state)


def get_rng_state_all() -> list:
    return [get_rng_state(i) for i in range(device_count())]


def set_rng_state_all(new_states) -> None:
    for i, state in enumerate(new_states):
        set_rng_state(state, i)



# ------------------------------------------------------------------- memory
def memory_allocated(device=None) -> int:
    """Bytes in use in CuPy's memory pool (0 before CUDA is used, as in PyTorch)."""
    if not is_initialized():
        return 0
    return backend.cupy().get_default_memory_pool().used_bytes()


def memory_reserved(device=None) -> int:
    """Bytes CuPy's memory pool holds (in use or cached; 0 before CUDA is used)."""
    if not is_initialized():
        return 0
    return backend.cupy().get_default_memory_pool().total_bytes()


def memory_stats(device=None) -> dict:
    """PyTorch's keys that CuPy's pool can give: current bytes allocated and reserved
    (an empty dict before CUDA is used, as in PyTorch)."""
    if not is_initialized():
        return {}
    return {"allocated_bytes.all.current": memory_allocated(device),
            "reserved_bytes.all.current": memory_reserved(device)}


def empty_cache() -> None:
    """Free the cached blocks of CuPy's memory pools (nothing before CUDA is used)."""
    if not is_initialized():
        return
    cp = backend.cupy()
    cp.get_default_memory_pool().free_all_blocks()
    cp.get_default_pinned_memory_pool().free_all_blocks()


# ------------------------------------------------------------- pinned memory
def _pin_memory(t):
    """``Tensor.pin_memory()``: a copy of a CPU tensor in page-locked host memory
    (CuPy's pinned pool), from which copies to the GPU run asynchronously. Without a GPU
    it raises, as PyTorch does."""
    if not is_available():
        raise RuntimeError("Cannot access accelerator device when none is available.")
    if backend.is_device_array(t._data):
        raise RuntimeError(f"cannot pin '{t.dtype}' tensor on {t.device}: only dense CPU tensors can be pinned")
    if _is_pinned(t):
        return t
    import cupyx

    out = t.clone()  # the autograd graph of a copy; its data then moves to pinned memory
    pinned = cupyx.empty_pinned(t._data.shape, t._data.dtype)
    pinned[...] = t._data
    out._data = pinned
    return out


def _is_pinned(t) -> bool:
    """``Tensor.is_pinned()``: whether a CPU tensor's memory is page-locked."""
    if backend._cupy is None or backend.is_device_array(t._data) or t._data.size == 0:
        return False
    runtime = backend._cupy.cuda.runtime
    try:
        attrs = runtime.pointerGetAttributes(t._data.ctypes.data)
    except Exception:  # memory CUDA does not know
        return False
    return attrs.type == getattr(runtime, "memoryTypeHost", 1)
