"""Samplers: the order in which a DataLoader visits a dataset (``SequentialSampler``,
``RandomSampler``, ``SubsetRandomSampler``, ``WeightedRandomSampler``, ``BatchSampler``).
``DistributedSampler``, which gives each rank its share, lives in ``distributed.py``.

Random samplers draw from distgrad's generators (``generator=`` or the default one
that ``distgrad.manual_seed`` seeds): a seed gives a reproducible order, though not
the numbers PyTorch's generator would give for the same seed."""
from __future__ import annotations

import numpy as np

from ..random import Generator, rng


class Sampler:
    """Base of the samplers: subclasses define ``__iter__`` (indices, or lists of them)
    and usually ``__len__`` (there is no default one, as in PyTorch)."""

    def __init__(self, data_source=None) -> None:
        pass

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random permutation per pass (``num_samples`` longer than the dataset chains
    several). With ``replacement=True`` indices are drawn independently, 32 at a time
    as the sampler is iterated (as PyTorch), so ``num_samples`` may be huge. With a
    seeded ``generator`` the order is reproducible; without one, each pass draws from
    the default generator."""

    def __init__(self, data_source, replacement: bool = False, num_samples: int | None = None,
                 generator: Generator | None = None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = generator
        if not isinstance(self.replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={self.replacement}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        n = len(self.data_source)
        g = rng(self.generator)
        if self.replacement:
            for _ in range(self.num_samples // 32):
                yield from g.integers(0, n, 32).tolist()
            yield from g.integers(0, n, self.num_samples % 32).tolist()
            return
        for _ in range(self.num_samples // n):
            yield from g.permutation(n).tolist()
        rest = self.num_samples % n
        if rest:
            yield from g.permutation(n)[:rest].tolist()

    def __len__(self):
        return self.num_samples


class SubsetRandomSampler(Sampler):
    """The given indices in a random order (a new permutation per pass)."""

    def __init__(self, indices, generator: Generator | None = None):
        self.indices = indices
        self.generator = generator

    def __iter__(self):
        for i in rng(self.generator).permutation(len(self.indices)).tolist():
            yield self.indices[i]

    def __len__(self):
        return len(self.indices)


class WeightedRandomSampler(Sampler):
    """``num_samples`` indices into ``weights``, index ``i`` drawn with probability
    proportional to ``weights[i]`` (as ``torch.multinomial``): independently with
    ``replacement=True``; otherwise each index at most once (weighted sampling without
    replacement, by the same exponential-keys method PyTorch uses, so once the
    positive weights are used up, zero-weight indices follow). ``weights`` need not
    sum to one; they are checked when the sampler is iterated, as in PyTorch."""

    def __init__(self, weights, num_samples: int, replacement: bool = True, generator: Generator | None = None):
        if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={num_samples}")
        if not isinstance(replacement, bool):
            raise ValueError(f"replacement should be a boolean value, but got replacement={replacement}")
        from ..dtype import float64
        from ..ops.creation import as_tensor

        w = as_tensor(weights, dtype=float64)
        if len(w.shape) != 1:
            raise ValueError(f"weights should be a 1d sequence but given weights have shape {tuple(w.shape)}")
        self.weights = w
        self.num_samples = num_samples
        self.replacement = replacement
        self.generator = generator

    def _draw(self) -> np.ndarray:
        w = np.asarray(self.weights.detach().cpu().numpy(), dtype=np.float64)
        n, k = w.shape[0], self.num_samples
        if n == 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        if not np.all(w >= 0):  # a NaN fails this too, and PyTorch reports it so
            raise RuntimeError("invalid multinomial distribution (encountering probability entry < 0)")
        if not np.all(np.isfinite(w)):
            raise RuntimeError("invalid multinomial distribution (encountering probability entry = infinity or NaN)")
        total = w.sum()
        if total <= 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
        g = rng(self.generator)
        if self.replacement:
            return g.choice(n, size=k, replace=True, p=w / total)
        if k > n:
            raise RuntimeError("cannot sample n_sample > prob_dist.size(-1) samples without replacement")
        keys = w / g.exponential(size=n)
        return np.argsort(-keys, kind="stable")[:k]

    def __iter__(self):
        yield from self._draw().tolist()

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    def __init__(self, sampler, batch_size: int, drop_last: bool):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self):
        batch = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


def __getattr__(name):
    # DistributedSampler moved to distributed.py; ``from .sampler import DistributedSampler`` still works.
    if name == "DistributedSampler":
        from .distributed import DistributedSampler

        return DistributedSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
