"""Array backends: numpy on the CPU (CuPy on GPUs will plug in here).

This is the only module that decides which array library holds a tensor's data.
Ops ask ``array_module(arr)`` for the module of their inputs (the ``xp`` pattern)
and never import numpy or cupy themselves.
"""
from __future__ import annotations

import numpy as np

ndarray = np.ndarray


class device:
    """Where a tensor's data lives; ``device('cpu')``, as in PyTorch."""

    __slots__ = ("type", "index")

    def __init__(self, type: str | "device" = "cpu", index: int | None = None):
        if isinstance(type, device):
            type, index = type.type, type.index
        if ":" in type:
            type, _, idx = type.partition(":")
            index = int(idx)
        if type != "cpu":
            raise RuntimeError(
                f"Expected a 'cpu' device type, got {type!r}: this build of distgrad "
                "has only the CPU (numpy) backend"
            )
        self.type = type
        self.index = index

    def __repr__(self):
        if self.index is None:
            return f"device(type='{self.type}')"
        return f"device(type='{self.type}', index={self.index})"

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __eq__(self, other):
        if isinstance(other, str):
            other = device(other)
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = device("cpu")


def normalize(data):
    """An array for an op's result: numpy returns scalars for 0-d results, but a
    tensor's data must be an array (views and in-place writes need memory)."""
    if isinstance(data, np.generic):
        return np.asarray(data)
    return data


def array_module(arr):
    """The array module (numpy or cupy) that owns ``arr``."""
    return np


def device_of(arr) -> device:
    return CPU


def as_array(data, dtype=None, dev=None):
    """Turn a Python scalar, nested list or array into a backend array."""
    if dev is not None:
        device(dev)  # validates the device name
    return np.asarray(data, dtype=dtype)


def to_numpy(arr):
    return arr
