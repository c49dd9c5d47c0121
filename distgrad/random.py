"""Random number generators: ``manual_seed``, ``Generator``, RNG state save/restore."""
from __future__ import annotations

import contextlib
import json

import numpy as np


class _Seeded:
    """What every generator does with its seed (``manual_seed`` is each one's own)."""

    _seed = 0

    def manual_seed(self, seed: int):
        raise NotImplementedError

    def seed(self) -> int:
        """Seed with a fresh random number, and return it."""
        s = int(np.random.SeedSequence().entropy) & ((1 << 63) - 1)
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed


class Generator(_Seeded):
    """A seeded source of random numbers, as ``torch.Generator`` (PCG64 underneath)."""

    def __init__(self, device="cpu"):
        self.device = device
        self._seed = 67280421310721
        self._rng = np.random.Generator(np.random.PCG64(self._seed))

    def manual_seed(self, seed: int) -> "Generator":
        seed = int(seed)
        if seed < 0:
            seed &= (1 << 64) - 1
        self._seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))
        return self


    def get_state(self):
        """The generator's state as a uint8 tensor (restore it with ``set_state``)."""
        from .tensor import _wrap

        blob = json.dumps({"seed": self._seed, "state": self._rng.bit_generator.state}).encode()
        return _wrap(np.frombuffer(blob, dtype=np.uint8).copy())

    def set_state(self, new_state) -> "Generator":
        arr = new_state._data if hasattr(new_state, "_data") else np.asarray(new_state)
        try:
            info = json.loads(bytes(np.asarray(arr, dtype=np.uint8)).decode())
            bitgen = np.random.PCG64()
            bitgen.state = info["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError(f"set_state: not a state produced by Generator.get_state() ({e})") from None
        self._seed = info["seed"]
        self._rng = np.random.Generator(bitgen)
        return self


default_generator = Generator()
_cuda_seed = None  # the GPU generators' seed, once set by manual_seed (see cuda.initial_seed)


# ------------------------------------------------------------- GPU generators
# Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11),
# the counter-based generator GPUs use: a key (the seed) and a 128-bit counter give four
# 32-bit words, with no state between draws. A generator's whole state is (seed,
# offset): draw number ``offset`` of a generator uses counters (i, offset) for its
# i-th group of four words, so saving and restoring the state (as checkpointing with
# dropout needs) is saving two integers. The same arithmetic runs in numpy (the
# reference, tested against the published known-answer vectors) and as a CuPy kernel.
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)


def philox4x32(counter, key, rounds: int = 10):
    """Philox4x32 on numpy arrays: ``counter`` a (4, n) uint32 array, ``key`` two ints;
    returns the (4, n) uint32 output words."""
    c = [np.asarray(w, dtype=np.uint32) for w in counter]
    k0, k1 = np.uint32(key[0] & 0xFFFFFFFF), np.uint32(key[1] & 0xFFFFFFFF)
    m0, m1 = np.uint64(_PHILOX_M[0]), np.uint64(_PHILOX_M[1])
    mask = np.uint64(0xFFFFFFFF)
    for r in range(rounds):
        if r:
            k0 = np.uint32((int(k0) + _PHILOX_W[0]) & 0xFFFFFFFF)
            k1 = np.uint32((int(k1) + _PHILOX_W[1]) & 0xFFFFFFFF)
        p0 = c[0].astype(np.uint64) * m0
        p1 = c[2].astype(np.uint64) * m1
        hi0, lo0 = (p0 >> np.uint64(32)).astype(np.uint32), (p0 & mask).astype(np.uint32)
        hi1, lo1 = (p1 >> np.uint64(32)).astype(np.uint32), (p1 & mask).astype(np.uint32)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return np.stack(c)


def _uniform_words(words, n: int, dtype):
    """``n`` uniform [0, 1) values of ``dtype`` from (4, groups) uint32 words, group by
    group: float32 takes the top 24 bits of each word, float64 53 bits of two words."""
    flat = words.T.reshape(-1)                       # group-major: w0 w1 w2 w3 of group 0, ...
    if np.dtype(dtype) == np.float64:
        a, b = flat[0::2].astype(np.uint64), flat[1::2].astype(np.uint64)
        vals = ((a >> np.uint64(5)) * np.uint64(1 << 26) + (b >> np.uint64(6))).astype(np.float64) * 2.0 ** -53
    else:
        vals = (flat >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
    return vals[:n]


_CUDA_SOURCE = r"""
unsigned long long g = (unsigned long long)i;
unsigned int c0 = (unsigned int)g, c1 = (unsigned int)(g >> 32), c2 = o0, c3 = o1;
unsigned int a0 = k0, a1 = k1;
for (int r = 0; r < 10; r++) {
    if (r) { a0 += 0x9E3779B9u; a1 += 0xBB67AE85u; }
    unsigned int hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    unsigned int hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    unsigned int n0 = hi1 ^ c1 ^ a0, n2 = hi0 ^ c3 ^ a1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
}
unsigned int w[4] = {c0, c1, c2, c3};
"""
_CUDA_F32 = _CUDA_SOURCE + r"""
for (int j = 0; j < 4; j++) {
    long long idx = 4 * (long long)i + j;
    if (idx < n) out[idx] = (float)(w[j] >> 8) * 5.9604644775390625e-08f;
}
"""
_CUDA_F64 = _CUDA_SOURCE + r"""
for (int j = 0; j < 2; j++) {
    long long idx = 2 * (long long)i + j;
    unsigned long long a = w[2 * j] >> 5, b = w[2 * j + 1] >> 6;
    if (idx < n) out[idx] = (double)(a * 67108864ull + b) * 1.1102230246251565e-16;
}
"""
_kernels: dict = {}


def _cuda_kernel(dtype):
    import cupy

    name = np.dtype(dtype).name
    if name not in _kernels:
        body, ctype = (_CUDA_F64, "float64") if name == "float64" else (_CUDA_F32, "float32")
        _kernels[name] = cupy.ElementwiseKernel(
            "uint32 k0, uint32 k1, uint32 o0, uint32 o1, int64 n", f"raw {ctype} out", body,
            f"distgrad_philox_uniform_{ctype}")
    return _kernels[name]


class DeviceGenerator(_Seeded):
    """A GPU's generator (``torch.cuda`` keeps one per device): Philox with state (seed,
    offset), drawn on the device. ``get_state`` is 16 bytes (seed, offset), as PyTorch's
    CUDA generator state."""

    def __init__(self, index: int = 0, seed: int | None = None):
        self.device = f"cuda:{index}"
        self.index = index
        self._seed = int(seed if seed is not None else default_generator.initial_seed())
        self._offset = 0

    def manual_seed(self, seed: int) -> "DeviceGenerator":
        self._seed = int(seed) & ((1 << 64) - 1)
        self._offset = 0
        return self


    def get_offset(self) -> int:
        return self._offset

    def get_state(self):
        from .tensor import _wrap

        return _wrap(np.array([self._seed, self._offset], dtype=np.uint64).view(np.uint8).copy())

    def set_state(self, new_state) -> "DeviceGenerator":
        arr = new_state._data if hasattr(new_state, "_data") else np.asarray(new_state)
        arr = np.asarray(arr)
        if arr.dtype != np.uint8 or arr.size != 16:
            raise RuntimeError(f"set_state: a GPU generator's state is 16 bytes (uint8), got {arr.size} "
                               f"elements of {arr.dtype}; use the tensor get_state() returned")
        self._seed, self._offset = (int(v) for v in np.ascontiguousarray(arr).view(np.uint64))
        return self

    def _next(self) -> tuple:
        """(key, offset words) for one draw, advancing the offset."""
        key = (self._seed & 0xFFFFFFFF, self._seed >> 32)
        off = self._offset
        self._offset += 1
        return key, (off & 0xFFFFFFFF, (off >> 32) & 0xFFFFFFFF)

    def uniform_numpy(self, n: int, dtype=np.float32):
        """The draw the GPU kernel makes, computed with numpy (the reference)."""
        key, (o0, o1) = self._next()
        per = 2 if np.dtype(dtype) == np.float64 else 4
        groups = -(-n // per)
        g = np.arange(groups, dtype=np.uint64)
        counter = [(g & np.uint64(0xFFFFFFFF)).astype(np.uint32), (g >> np.uint64(32)).astype(np.uint32),
                   np.full(groups, o0, np.uint32), np.full(groups, o1, np.uint32)]
        return _uniform_words(philox4x32(counter, key), n, dtype)

    def uniform(self, shape, dtype=np.float32):
        """Uniform [0, 1) samples of ``shape`` on this generator's GPU."""
        import cupy

        n = 1
        for s in shape:
            n *= int(s)
        key, (o0, o1) = self._next()
        per = 2 if np.dtype(dtype) == np.float64 else 4
        with cupy.cuda.Device(self.index):
            out = cupy.empty(n, dtype=dtype)
            if n:
                _cuda_kernel(dtype)(np.uint32(key[0]), np.uint32(key[1]), np.uint32(o0), np.uint32(o1),
                                    np.int64(n), out, size=-(-n // per))
        return out.reshape(tuple(shape))


_device_generators: dict = {}


def device_generator(index: int) -> DeviceGenerator:
    """The generator of GPU ``index`` (made at first use, seeded as the last
    ``manual_seed`` said, or with the CPU generator's seed)."""
    gen = _device_generators.get(index)
    if gen is None:
        gen = _device_generators[index] = DeviceGenerator(index, _cuda_seed)
    return gen


def device_states() -> dict:
    """Every GPU generator made so far: index -> state."""
    return {i: g.get_state() for i, g in _device_generators.items()}


def set_device_states(states: dict) -> None:
    for i, state in states.items():
        device_generator(i).set_state(state)


def get_all_states(devices=()) -> tuple:
    """The CPU generator's state and every GPU generator's (made now for ``devices``,
    GPU indices, if not yet): what checkpointing restores before recomputing a
    segment."""
    for i in devices:
        device_generator(i)
    return default_generator.get_state(), device_states()


def set_all_states(states: tuple) -> None:
    cpu, devices = states
    default_generator.set_state(cpu)
    set_device_states(devices)


@contextlib.contextmanager
def fork_rng(devices=None, enabled: bool = True, _caller: str = "fork_rng", _devices_kw: str = "devices",
             device_type: str = "cuda"):
    """Inside, draw freely: on exit the CPU generator and the GPU generators (of
    ``devices``, default: every one made so far) are put back as they were (PyTorch's
    ``torch.random.fork_rng``)."""
    if not enabled:
        yield
        return
    cpu = default_generator.get_state()
    indices = list(_device_generators) if devices is None else [_device_index(d) for d in devices]
    saved = {i: device_generator(i).get_state() for i in indices}
    try:
        yield
    finally:
        default_generator.set_state(cpu)
        set_device_states(saved)


def _device_index(d) -> int:
    from .backend import device

    return d if isinstance(d, int) else (device(d).index or 0)


def manual_seed(seed: int) -> Generator:
    """Seed the default generator and every GPU's (made or still to be made)."""
    global _cuda_seed
    _cuda_seed = int(seed)
    for g in _device_generators.values():
        g.manual_seed(seed)
    return default_generator.manual_seed(seed)


def seed() -> int:
    return default_generator.seed()


def initial_seed() -> int:
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state) -> None:
    default_generator.set_state(new_state)


def rng(generator: Generator | None) -> np.random.Generator:
    """The numpy generator behind ``generator`` (the default one for None)."""
    return (generator or default_generator)._rng


def uniform_like(arr):
    """Uniform [0, 1) samples shaped like ``arr``, drawn on ``arr``'s device: the
    default generator for host arrays, CuPy's (seeded by ``manual_seed``) for GPU ones."""
    from . import backend

    if backend.is_device_array(arr):
        return device_generator(arr.device.id).uniform(arr.shape, np.float32)
    return default_generator._rng.random(arr.shape)
