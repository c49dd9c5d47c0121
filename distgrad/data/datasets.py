"""Built-in datasets that need no download.

- ``digits``: the 8x8 handwritten digits that ship with scikit-learn (install the
  ``examples`` extra), split into train and validation sets.
- ``CharCorpus``: next-byte prediction over the Python standard library's own
  source files, which are present wherever Python is.
"""
from __future__ import annotations

import os
import sysconfig

import numpy as np

from ..ops.creation import from_numpy
from .dataset import Dataset, TensorDataset


def _split_indices(n: int, split: str, val_fraction: float, seed: int) -> np.ndarray:
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(n * val_fraction))
    return order[:n_val] if split == "val" else order[n_val:]


def digits(split: str = "train", val_fraction: float = 0.2, seed: int = 0) -> TensorDataset:
    """The 1,797 8x8 digit images as (x: float32 of 64 pixels in [0, 1], y: int64 label),
    split into train and validation sets by a permutation seeded with ``seed``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(
            "the digits dataset comes from scikit-learn: install it with pip install -e \".[examples]\" "
            "(or pip install scikit-learn)"
        ) from None
    d = load_digits()
    idx = np.sort(_split_indices(len(d.target), split, val_fraction, seed))
    x = (d.data[idx] / 16.0).astype(np.float32)
    y = d.target[idx].astype(np.int64)
    return TensorDataset(from_numpy(x), from_numpy(y))


def stdlib_source_files() -> list[str]:
    """The standard library's top-level ``.py`` files, in a stable order."""
    root = sysconfig.get_paths()["stdlib"]
    return sorted(os.path.join(root, f) for f in os.listdir(root) if f.endswith(".py"))


class CharCorpus(Dataset):
    """Byte-level language-model windows over the standard library's source.

    The corpus is the concatenated bytes of ``stdlib_source_files()`` (up to
    ``max_bytes``); its first ``1 - val_fraction`` is the train split and the rest
    the validation split. Item ``i`` is ``(x, y)``: ``block_size`` bytes from
    position ``i`` and the same window shifted by one, both int64. The vocabulary
    is the 256 byte values.
    """

    vocab_size = 256

    def __init__(self, block_size: int = 64, split: str = "train", val_fraction: float = 0.1,
                 max_bytes: int = 2_000_000):
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        chunks, total = [], 0
        for path in stdlib_source_files():
            with open(path, "rb") as f:
                b = f.read()
            chunks.append(b[: max_bytes - total])
            total += len(chunks[-1])
            if total >= max_bytes:
                break
        data = np.frombuffer(b"".join(chunks), dtype=np.uint8)
        cut = int(len(data) * (1 - val_fraction))
        self.data = data[:cut] if split == "train" else data[cut:]
        if len(self.data) <= block_size + 1:
            raise ValueError(f"CharCorpus: the {split} split has only {len(self.data)} bytes for block_size={block_size}")
        self.block_size = block_size
        self.split = split

    def __len__(self):
        return len(self.data) - self.block_size

    def __getitem__(self, i):
        w = self.data[i:i + self.block_size + 1].astype(np.int64)
        return from_numpy(w[:-1].copy()), from_numpy(w[1:].copy())

    def __getitems__(self, indices):
        """A whole batch in one gather (the DataLoader uses this)."""
        idx = np.asarray(indices)[:, None] + np.arange(self.block_size + 1)
        w = self.data[idx].astype(np.int64)
        return [(from_numpy(r[:-1]), from_numpy(r[1:])) for r in w]

    def unigram_entropy(self) -> float:
        """Cross-entropy (nats per byte) of predicting every byte from byte frequencies
        alone: the loss a model that ignores context would reach."""
        counts = np.bincount(self.data, minlength=256).astype(np.float64)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log(p)).sum())

    def decode(self, ids) -> str:
        arr = np.asarray(ids.tolist() if hasattr(ids, "tolist") else ids, dtype=np.uint8)
        return arr.tobytes().decode("utf-8", errors="replace")
