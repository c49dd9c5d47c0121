"""Random number generators: ``manual_seed``, ``Generator``, RNG state save/restore."""
from __future__ import annotations

import json

import numpy as np


class Generator:
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

    def seed(self) -> int:
        s = int(np.random.SeedSequence().entropy) & ((1 << 63) - 1)
        self.manual_seed(s)
        return s

    def initial_seed(self) -> int:
        return self._seed

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
_cuda_seed = None  # the GPU generator's seed, once set by manual_seed (see cuda.initial_seed)


def manual_seed(seed: int) -> Generator:
    """Seed the default generator, and the GPU's when CUDA is in use."""
    global _cuda_seed
    from . import backend

    if backend._cupy is not None:
        _cuda_seed = int(seed)
        backend._cupy.random.seed(int(seed) & 0xFFFFFFFF)
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
        return backend._cupy.random.random_sample(arr.shape, dtype=np.float32)
    return default_generator._rng.random(arr.shape)
